"""What a component is and how components are found: the kinds, the hookspec, configs, the registry."""
