"""The engine side of stylezoo: registry, configs, interfaces, checkpoints, training and inference."""
