"""Process-level performance settings applied at the start of aelab-train / aelab-eval: glibc's malloc thresholds
and torch's NaN fill of new tensors under deterministic algorithms.

glibc's malloc returns freed memory to the kernel eagerly: blocks above the mmap threshold are mmap'd and munmap'd
on every allocation, and the top of the heap is trimmed as soon as it exceeds the trim threshold. A training step
allocates and frees the same activation buffers thousands of times, so each step pays page faults and zeroing of
fresh pages. Keeping those pages in the process (the effect of MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ in
the environment) removes that cost; see experiments/benchmarks/RESULTS.md for the measured effect.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

import torch

OPT_OUT_ENV = "AELAB_NO_MALLOC_TUNING"

# mallopt parameter numbers from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# The documented maximum (mallopt(3): 4*1024*1024*sizeof(long) = 32 MiB on 64-bit; glibc ignores larger
# MALLOC_MMAP_THRESHOLD_ values): buffers up to 32 MiB come from the heap and are reused.
MMAP_THRESHOLD = 32 * 1024 * 1024
# Keep up to 1 GiB of freed memory at the top of the heap instead of trimming it back to the kernel after each step.
TRIM_THRESHOLD = 1024 * 1024 * 1024

_applied: dict[str, int] | None = None


def _libc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def tune_malloc(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> dict[str, int]:
    """Raise glibc's mmap and trim thresholds in this process (fixed values also switch off glibc's dynamic
    threshold). Returns the settings that took effect: empty on other C libraries, when AELAB_NO_MALLOC_TUNING=1,
    or when the user already set MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ (their choice wins)."""
    global _applied
    if os.environ.get(OPT_OUT_ENV, "").strip().lower() in ("1", "true", "yes"):
        return {}
    if _applied is not None:
        return dict(_applied)
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        _applied = {}
        return {}
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = {}
    for env, param, value in (("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, mmap_threshold),
                              ("MALLOC_TRIM_THRESHOLD_", M_TRIM_THRESHOLD, trim_threshold)):
        if env in os.environ:
            continue
        if libc.mallopt(param, int(value)) == 1:  # 1 = accepted, 0 = out of range (nothing changed)
            applied[env.lower().strip("_")] = int(value)
    _applied = applied
    return dict(applied)


def skip_nan_fill() -> None:
    """trainer.deterministic also makes torch fill every new tensor with NaN (to expose reads of uninitialised
    memory). Correct code never reads it, torch's documentation suggests turning the fill off for speed, and
    results stay bit-for-bit deterministic; the fill is a visible share of a small conv model's CPU step."""
    torch.utils.deterministic.fill_uninitialized_memory = False
