"""Tensor operations shared by the engine and the plugins: fast CPU layers, Gram matrices, image metrics."""
