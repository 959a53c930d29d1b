"""The peak memory of a stage: resident memory of this process (Linux) and CUDA memory.

`peak_memory()` opens a window: it gives back memory freed but still held by the allocator
(`release_freed`), then resets the kernel's high-water mark of this process's
resident set (writing 5 to /proc/self/clear_refs, Linux 4.0 and later) and torch's CUDA peak
statistics; `window.gib()` then gives the peaks reached since, in GiB. Where a counter cannot be
reset (another OS, a kernel that refuses) it is left out rather than reported as a peak that
began before the stage. Only this process counts: the workers of `--processes N` are not
included (the stage's record says so through the processes count it ran with).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

GIB = 2**30
_STATUS, _CLEAR = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def _status_bytes(field: str) -> int | None:
    """A memory field of this process's /proc status (VmHWM, VmRSS) in bytes, or None."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _vm_hwm() -> int | None:
    """This process's peak resident set (VmHWM) in bytes, or None where unknown."""
    return _status_bytes("VmHWM")


def resident_bytes() -> int | None:
    """This process's resident set now (VmRSS) in bytes, or None where unknown."""
    return _status_bytes("VmRSS")


def _reset_rss() -> bool:
    try:
        _CLEAR.write_text("5")
    except OSError:
        return False
    return True


def _cuda():
    """torch.cuda where torch is loaded and a GPU is initialised, else None (never imports torch
    or starts CUDA for the measurement's sake)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda


class PeakWindow:
    def __init__(self):
        self.rss = _reset_rss() and _vm_hwm() is not None
        self.cuda = _cuda()
        if self.cuda is not None:
            self.cuda.reset_peak_memory_stats()

    def gib(self) -> dict[str, float]:
        """{"rss": GiB} and {"cuda": GiB} where measured: the peaks since the window opened."""
        out = {}
        if self.rss and (hwm := _vm_hwm()) is not None:
            out["rss"] = round(hwm / GIB, 3)
        cuda = self.cuda or _cuda()  # CUDA started inside the window: its peak is the stage's
        if cuda is not None:
            out["cuda"] = round(cuda.max_memory_allocated() / GIB, 3)
        return out


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None (another C library). Looked up once: find_library runs
    ldconfig in a subprocess."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


def release_freed() -> None:
    """Hand memory that Python and the C allocator hold but no object uses back to the system
    (a full garbage collection, then glibc's malloc_trim where there is one), so that a window
    opened next starts from what is in use: otherwise a stage that follows a large one in the
    same process starts from the freed pages the allocator kept, and its peak reads high."""
    import gc

    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def peak_memory() -> PeakWindow:
    release_freed()
    return PeakWindow()
