"""The one pluggy hookspec. Built-in components and third-party packages both register through it."""

from __future__ import annotations

from typing import Any, Protocol

import pluggy

PROJECT = "stylezoo"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Register(Protocol):
    """The callable a plugin receives: `register("gen/name", factory, config=Config, **card)`."""

    def __call__(self, name: str, factory: Any, *, config: type, **card: Any) -> None: ...


class Spec:
    @hookspec
    def register_components(self, register: Register) -> None:  # type: ignore[empty-body]
        """Register components by calling `register(name, factory, config=..., **card)` once per component.

        `name` is `kind/short` with kind one of gen, disc, feat, loss, gp; `factory(config)` returns an
        `nn.Module`; `config` is a dataclass whose defaults are the component's defaults; `card` holds
        optional facts (description, family, compatible, ...).
        """
