"""The machine a run uses: devices, CPU memory, processes (torchrun)."""
