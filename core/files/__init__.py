"""Files: images, training data, checkpoints (safetensors) and pretrained weights."""
