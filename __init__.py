"""stylezoo: a plugin-based model zoo for GAN-based image style transfer in PyTorch.

The Python API mirrors the CLI::

    import stylezoo
    stylezoo.list_components("vgg*")            # stylezoo list 'vgg*'
    gen = stylezoo.build("gen/dcgan", size=64)  # any component from its name and config overrides
    stylezoo.info("loss/gram")                   # stylezoo info loss/gram
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .core.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from stylezoo.core.components.registry import Entry, Registry


def registry() -> Registry:
    """The process-wide registry (built-ins plus installed plugins), loaded on first use."""
    from stylezoo.core.components.registry import default_registry

    return default_registry()


def list_components(pattern: str = "*", kind: str | None = None) -> list[str]:
    """Registered component names matching a wildcard, e.g. `list_components('vgg*')`."""
    return registry().names(pattern, kind)


def info(name: str) -> Entry:
    """The registry entry (factory, config class, card, plugin) of a component."""
    return registry().get(name)


def build(name: str, **overrides: Any) -> Any:
    """Build a component from its name and config overrides: `build('gen/dcgan', size=64)`."""
    return registry().build(name, overrides)


def __getattr__(name: str) -> Any:
    # Heavier API pieces import torch; load them only when asked for.
    lazy = {
        "train": ("stylezoo.core.training.api", "train"),
        "RunConfig": ("stylezoo.core.runs.runconfig", "RunConfig"),
        "load_generator": ("stylezoo.core.use.stylizer", "load_generator"),
        "Stylizer": ("stylezoo.core.use.stylizer", "Stylizer"),
        "StylezooError": ("stylezoo.core.errors", "StylezooError"),  # what every user-facing error derives from
    }
    if name in lazy:
        import importlib

        mod, attr = lazy[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'stylezoo' has no attribute {name!r}")


__all__ = ["__version__", "registry", "list_components", "info", "build", "train", "RunConfig",
           "load_generator", "Stylizer", "StylezooError"]
