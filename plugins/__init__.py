"""Built-in components. Each module here is an ordinary pluggy plugin, exactly like a third-party one.

To add a built-in: write its module (one file per model family) with a `register_components` hook,
add the module to BUILTINS, and describe it in registry.toml.
"""

BUILTINS: tuple[str, ...] = (
    "stylezoo.plugins.dcgan",
    "stylezoo.plugins.encdec",
    "stylezoo.plugins.unet",
    "stylezoo.plugins.adain",
    "stylezoo.plugins.cin",
    "stylezoo.plugins.patchgan",
    "stylezoo.plugins.vgg",
    "stylezoo.plugins.timm_features",
    "stylezoo.plugins.efficientnet",
    "stylezoo.plugins.adversarial",
    "stylezoo.plugins.perceptual",
    "stylezoo.plugins.pixel",
    "stylezoo.plugins.penalties",
)
