"""Which device a run uses and whether it has fast bfloat16: shared by training, inference and evaluation."""

from __future__ import annotations

from pathlib import Path

import torch


def pick_device(spec: str) -> torch.device:
    """`auto` = cuda when available, else cpu; anything else as torch.device reads it (cpu, cuda:1 ...).

    A device that is unknown or not present here is a UsageError saying what to give instead."""
    from ..errors import UsageError

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        raise UsageError(f"Unknown device {spec!r}: use auto, cpu, cuda or cuda:N.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec} asked for CUDA, which is not available here; use --device cpu "
                             "(or auto).")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise UsageError(f"--device {spec}: this machine has {n} CUDA device(s), cuda:0 to cuda:{n - 1}.")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"--device {spec} asked for Apple's MPS, which is not available here; use --device cpu.")
    elif dev.type != "cpu":
        raise UsageError(f"--device {spec}: stylezoo runs on cpu, cuda or mps devices.")
    return dev


def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 is fast on `device`: CUDA's own answer; on the CPU, oneDNN with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and _cpu_has_bf16()


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def compile_unavailable(device: torch.device) -> str | None:
    """Why torch.compile cannot run on `device`, or None. On the CPU inductor builds C++ and needs a compiler;
    found here, it refuses at set-up what would otherwise fail in the first step with inductor's traceback."""
    if device.type != "cpu":
        return None
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # another torch layout: let torch.compile speak for itself
        return None
    try:
        get_cpp_compiler()
    except Exception:  # inductor's InvalidCxxCompiler, or whatever its search raises
        return ("torch.compile on the CPU needs a C++ compiler and none was found ($CXX, or g++ on the PATH). "
                "Install one (e.g. `apt install g++`) or train without train.compile.")
    return None
