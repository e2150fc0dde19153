"""stylezoo: a plugin-based model zoo for GAN-based image style transfer in PyTorch.

The Python API mirrors the CLI::

    import stylezoo
    stylezoo.list_components("vgg*")            # stylezoo list 'vgg*'
    gen = stylezoo.build("gen/dcgan", size=64)  # any component from its name and config overrides
    stylezoo.info("loss/gram")                   # stylezoo info loss/gram
    stylezoo.load_model("starry-night")("photo.jpg").save("out.png")  # stylezoo stylize photo.jpg --model ...
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


def resolve(**layers: Any) -> Any:
    """A RunConfig from a recipe, a config file, flags and --set, as `stylezoo run` resolves them, with the
    process-wide registry: `resolve(recipe="default", cli={"train": {"steps": 50}}, losses=["gram:20"])`."""
    from .core.runs.runconfig import resolve as _resolve

    return _resolve(registry(), **layers)


# name -> (module, attribute): the rest of the API, imported on first use (most of it needs torch).
_LAZY = {
    "train": ("stylezoo.core.training.api", "train"),
    "RunConfig": ("stylezoo.core.runs.runconfig", "RunConfig"),
    "load_generator": ("stylezoo.core.use.loading", "load_generator"),
    "Stylizer": ("stylezoo.core.use.stylizer", "Stylizer"),
    # the trained models shipped in the package (stylezoo models; stylize --model NAME)
    "load_model": ("stylezoo.core.use.shipped", "load_model"),
    "list_models": ("stylezoo.core.use.shipped", "list_models"),
    "model_info": ("stylezoo.core.use.shipped", "get_model"),
    # errors: every error a user can fix derives from StylezooError
    "StylezooError": ("stylezoo.core.errors", "StylezooError"),
    "ConfigError": ("stylezoo.core.errors", "ConfigError"),
    "CompositionError": ("stylezoo.core.errors", "CompositionError"),
    "PluginError": ("stylezoo.core.errors", "PluginError"),
    # the plugin API (docs/plugins.md)
    "hookimpl": ("stylezoo.core.components.hookspecs", "hookimpl"),
    "Register": ("stylezoo.core.components.hookspecs", "Register"),
    "Generator": ("stylezoo.core.components.kinds", "Generator"),
    "Discriminator": ("stylezoo.core.components.kinds", "Discriminator"),
    "Extractor": ("stylezoo.core.components.kinds", "Extractor"),
    "LossTerm": ("stylezoo.core.components.kinds", "LossTerm"),
    "AdversarialLoss": ("stylezoo.core.components.kinds", "AdversarialLoss"),
    "Penalty": ("stylezoo.core.components.kinds", "Penalty"),
    "StepContext": ("stylezoo.core.components.kinds", "StepContext"),
    "NEEDS": ("stylezoo.core.components.kinds", "NEEDS"),
    "frozen": ("stylezoo.core.components.kinds", "frozen"),
    "Loss": ("stylezoo.core.components.base", "Loss"),
    "FeatureLoss": ("stylezoo.core.components.base", "FeatureLoss"),
    "LossConfig": ("stylezoo.core.components.base", "LossConfig"),
    "resolve_layers": ("stylezoo.core.components.base", "resolve_layers"),
    "check_weight": ("stylezoo.core.components.base", "check_weight"),
    "gram_matrix": ("stylezoo.core.ops.stats", "gram_matrix"),
    "moments": ("stylezoo.core.ops.stats", "moments"),
    "to_unit": ("stylezoo.core.ops.ranges", "to_unit"),
    "from_unit": ("stylezoo.core.ops.ranges", "from_unit"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value  # once
        return value
    raise AttributeError(f"module 'stylezoo' has no attribute {name!r}")


__all__ = ["__version__", "registry", "list_components", "info", "build", "resolve", *_LAZY]
