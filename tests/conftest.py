"""Shared fixtures: registries (full or bare with inline fake plugins), tiny images, an isolated home.

Keep tests small: 2 CPU cores, 16-64 px images. Weights in the default cache stay visible unless a test
asks for `tmp_home`.
"""

from __future__ import annotations

import os

# The suite runs on the CPU even where there is a GPU: its reproducibility checks are bit-exact, which CUDA
# kernels (cuDNN's autotuned ones above all) do not promise. tests/test_devices.py covers CUDA; `make
# test-cuda` runs it with the GPU visible (STYLEZOO_TEST_CUDA=1). Set before anything imports torch (a
# library may ask CUDA for its devices at import), and inherited by subprocesses.
if os.environ.get("STYLEZOO_TEST_CUDA") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import types  # noqa: E402
from collections.abc import Callable, Iterable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from stylezoo.core.components.hookspecs import hookimpl  # noqa: E402
from stylezoo.core.components.registry import Registry  # noqa: E402

EMPTY_CATALOG: dict[str, Any] = {"components": {}, "recipes": {}}


@pytest.fixture(autouse=True)
def _no_plugin_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests expect the whole zoo: a STYLEZOO_PLUGINS in the developer's shell must not hide plugins."""
    monkeypatch.delenv("STYLEZOO_PLUGINS", raising=False)


@pytest.fixture
def registry() -> Registry:
    """A fresh registry with the built-ins and every installed entry-point plugin."""
    return Registry()


@dataclass
class FakeConfig:
    width: int = 4  # channels of the fake conv
    scale: float = 1.0  # must be > 0
    weight: float = 1.0  # its weight when registered as a loss term

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")


class FakeModule(nn.Module):
    """A tiny conv with a config, standing in for any component in registry tests."""

    family = "image"

    def __init__(self, cfg: FakeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.cfg.scale


def fake_plugin(
    name: str,
    components: Iterable[str] = (),
    *,
    fail_after: int | None = None,
    config: type = FakeConfig,
    **card: Any,
) -> types.ModuleType:
    """A plugin module object registering `components` (FakeModule each); raises after `fail_after` of them."""
    mod = types.ModuleType(name)
    names = list(components)

    @hookimpl
    def register_components(register: Callable[..., None]) -> None:
        for i, cname in enumerate(names):
            if fail_after is not None and i == fail_after:
                raise RuntimeError(f"{name} broke while registering")
            register(cname, FakeModule, config=config, **card)

    mod.register_components = register_components  # type: ignore[attr-defined]
    return mod


@pytest.fixture
def make_plugin() -> Callable[..., types.ModuleType]:
    """Factory for inline fake plugins: `make_plugin("acme", ["gen/a", "loss/b"], fail_after=None)`."""
    return fake_plugin


@pytest.fixture
def fake_component() -> tuple[type[nn.Module], type]:
    """(FakeModule, FakeConfig): what fake plugins register, for tests that write their own hook."""
    return FakeModule, FakeConfig


@pytest.fixture
def bare_registry() -> Callable[..., Registry]:
    """Factory: a Registry with no built-ins, no entry points, only the given plugin objects."""

    def make(*plugins: object, catalog: dict[str, Any] | None = None) -> Registry:
        return Registry(builtins=(), entry_points=False, plugins=plugins,
                        catalog=EMPTY_CATALOG if catalog is None else catalog)

    return make


def tiny_images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) float32 in [-1, 1], deterministic."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


@pytest.fixture
def images() -> Callable[..., torch.Tensor]:
    """Factory for tiny deterministic image batches in [-1, 1]: `images(n=2, size=32, seed=0)`."""
    return tiny_images


@pytest.fixture
def tmp_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """STYLEZOO_HOME pointing at an empty temporary folder (hides the weights cache: ask only if needed)."""
    home = tmp_path / "stylezoo-home"
    home.mkdir()
    monkeypatch.setenv("STYLEZOO_HOME", str(home))
    return home
