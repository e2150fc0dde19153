"""Freed memory kept in the process, so a CPU training step does not page-fault its tensors back in.

PyTorch's CPU allocator is the C library's malloc. glibc serves large blocks with mmap and returns them to
the system when freed (its threshold grows to at most 32 MiB), and gives back heap memory above 128 KiB
at the top. A training step frees and re-allocates the same activations every time, so each step touches
fresh pages and page-faults them in. With the thresholds raised, steps fault no more and run faster
(docs/benchmarks.md). This is the setting that launchers
such as `torch.backends.xeon.run_cpu` get by preloading jemalloc or tcmalloc, done through glibc's own
`mallopt` so nothing needs installing.

It is process-wide and one-way: the process keeps its peak memory until it exits. The Trainer applies
it on the CPU unless `train.keep_freed_memory` is false, the Stylizer unless `keep_freed_memory=False`.
"""

from __future__ import annotations

import ctypes
import platform

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # blocks under 1 GiB come from the heap (and are reused) instead of mmap
TRIM_THRESHOLD = (1 << 31) - 1  # never shrink the heap on free (malloc_trim(0) still does, on request)


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse (process-wide); returns whether it is in effect.

    False where the C library is not glibc (macOS, Windows, musl): there the call changes nothing.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                    and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    except (OSError, AttributeError):
        return False
