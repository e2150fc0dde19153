"""A smoke test for every registered component: builds tiny, runs, no NaNs, gradients, safetensors round trip.

Names are collected at import time from a full Registry (built-ins and installed plugins), and the checks
dispatch on the kind and on the Protocol attributes (family, needs, adversarial), so a new component, built-in
or third-party, is covered the moment it registers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stylezoo.core.components.checks import ComponentCheckError, check_component, plugin_components
from stylezoo.core.components.hookspecs import hookimpl
from stylezoo.core.components.kinds import StepContext
from stylezoo.core.components.registry import BUILTIN_PLUGINS as BUILTINS
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import ConfigError

REGISTRY = Registry()
NAMES = REGISTRY.names()
PLUGINS = [p.name for p in REGISTRY.plugins]


# ------------------------------------------------------------------------------------------ plugins


def test_builtins_have_no_failures():
    builtin = Registry(entry_points=False)
    assert [(p.name, p.error) for p in builtin.failures] == []
    assert {p.name for p in builtin.plugins} == {m.rsplit(".", 1)[-1] for m in BUILTINS}


@pytest.mark.parametrize("plugin", PLUGINS)
def test_plugin_loaded(plugin):
    (info,) = [p for p in REGISTRY.plugins if p.name == plugin]
    assert info.error is None, f"plugin {plugin} ({info.dist}) failed to load: {info.error}"
    assert info.components, f"plugin {plugin} registered nothing"


# ------------------------------------------------------------------------------------------ per component


@pytest.mark.parametrize("name", NAMES)
def test_component_smoke(name: str, tmp_path: Path) -> None:
    """The checks plugin authors run on their own components (stylezoo.testing), on every installed one."""
    check_component(name, tmp_path, registry=REGISTRY)


def test_the_checks_catch_a_broken_component(tmp_path: Path) -> None:
    """A generator that leaves [-1, 1] and a loss that returns a vector fail, naming themselves and the fault."""
    from dataclasses import dataclass

    from stylezoo.core.components.base import Loss, LossConfig

    @dataclass
    class Cfg:
        size_multiple: int = 1

    class Loud(nn.Module):
        family = "image"
        size_multiple = 1

        def __init__(self, cfg: Cfg) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x: Tensor) -> Tensor:
            return self.conv(x) * 10

    class Vector(Loss):
        def forward(self, ctx: StepContext) -> Tensor:
            return ctx.fake.flatten(1).mean(1)

    class Plugin:
        @hookimpl
        def register_components(self, register: Any) -> None:
            register("gen/loud", Loud, config=Cfg)
            register("loss/vector", Vector, config=LossConfig)

    reg = Registry([], entry_points=False, plugins=[Plugin()])
    with pytest.raises(ComponentCheckError, match=r"gen/loud: output leaves \[-1, 1\]"):
        check_component("gen/loud", tmp_path, registry=reg)
    with pytest.raises(ComponentCheckError, match="loss/vector: a loss term returns a scalar"):
        check_component("loss/vector", tmp_path, registry=reg)
    assert plugin_components("Plugin", registry=reg) == ["gen/loud", "loss/vector"]
    with pytest.raises(ComponentCheckError, match="no plugin 'nothing' is loaded"):
        plugin_components("nothing", registry=reg)


def test_a_component_seeded_from_its_own_config_passes_the_round_trip(tmp_path: Path) -> None:
    """An extractor whose fixed weights come from its config, not torch's global RNG, builds equal every time:
    the round trip must still prove that loading restores the weights, not refuse the component."""
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        weights: str = "random"
        seed: int = 7

    class Seeded(nn.Module):
        layer_names = ("a", "b")
        style_layers = ("a",)
        content_layers = ("b",)

        def __init__(self, cfg: Cfg) -> None:
            super().__init__()
            self.weights = cfg.weights
            g = torch.Generator().manual_seed(cfg.seed)
            self.a = nn.Parameter(torch.randn(4, 3, 3, 3, generator=g), requires_grad=False)
            self.b = nn.Parameter(torch.randn(4, 4, 3, 3, generator=g), requires_grad=False)

        def forward(self, image: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
            a = torch.relu(F.conv2d(image, self.a, padding=1))
            out = {"a": a}
            if "b" in layers:
                out["b"] = torch.relu(F.conv2d(a, self.b, padding=1))
            return {k: v for k, v in out.items() if k in layers}

    class Plugin:
        @hookimpl
        def register_components(self, register: Any) -> None:
            register("feat/seeded", Seeded, config=Cfg)

    check_component("feat/seeded", tmp_path, registry=Registry([], entry_points=False, plugins=[Plugin()]))


def test_components_reject_bad_config_values():
    """Every config with a `weight` refuses a negative or NaN one, except terms whose sign is meaningful."""
    checked = 0
    for name in NAMES:
        fields = {f.name for f in dataclasses.fields(REGISTRY.get(name).config)}
        if "weight" not in fields or name == "loss/entropy":  # entropy: alpha < 0 rewards uncertainty
            continue
        with pytest.raises(ConfigError):
            REGISTRY.make_config(name, {"weight": -1.0})
        checked += 1
    assert checked >= 5
