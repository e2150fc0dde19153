"""Checks for plugin authors: run stylezoo's component checks on your own components from your own tests.

    import pytest
    from stylezoo.testing import check_component, plugin_components

    @pytest.mark.parametrize("name", plugin_components("my_plugin"))
    def test_my_component(name, tmp_path):
        check_component(name, tmp_path)
"""

from __future__ import annotations

from .core.components.checks import ComponentCheckError, TinyDisc, TinyExtractor, check_component, plugin_components

__all__ = ["check_component", "plugin_components", "ComponentCheckError", "TinyExtractor", "TinyDisc"]
