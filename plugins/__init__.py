"""Built-in components. Each module here is an ordinary pluggy plugin, exactly like a third-party one.

The registry loads them by module name from `BUILTIN_PLUGINS` in core/components/registry.py (core never
imports this package); to add a built-in, write its module (one file per model family) with a
`register_components` hook, list it there, and describe its components in registry.toml.
"""
