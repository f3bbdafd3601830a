"""What this machine has: a GPU, free memory, bf16 matrix units, threads, and the one thread pool.

Everything that asks the machine a question asks it here, once: the command line,
training and evaluation (whether to run on the GPU), the data layer (whether a set
fits in memory, how many threads decode), the config (whether bf16 is a good CPU
default).

>>> memory_available() is None or memory_available() > 0
True
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from functools import cache

__all__ = [
    "uses_gpu",
    "gib",
    "memory_available",
    "fits_in_memory",
    "threads",
    "cores",
    "pool",
    "torch_workers",
    "cpu_has_bf16_units",
    "OthersMeter",
]


def uses_gpu(accelerator: str | None = "auto") -> bool:
    """Whether to run on the GPU: there is one and ``accelerator`` (--accelerator) is not cpu.

    ``gpu`` on a machine without one is a ConfigError naming --accelerator, so that
    no work starts that would then run on the CPU.
    """
    import torch

    from simsiam.errors import ConfigError

    available = torch.cuda.is_available()
    if accelerator == "gpu" and not available:
        raise ConfigError("--accelerator: gpu asked for, but no CUDA GPU is available")
    return accelerator != "cpu" and available


def gib(n: float) -> str:
    """Bytes for a log line: '3.7 MB', '451 MB', '1.35 GB', '193 GB'."""
    if n < 1e8:
        return f"{n / 1e6:.1f} MB"
    if n < 1e9:
        return f"{n / 1e6:.0f} MB"
    return f"{n / 1e9:.2f} GB" if n < 1e10 else f"{n / 1e9:.0f} GB"


def memory_available() -> int | None:
    """Bytes of memory this process could still take: MemAvailable, capped by a cgroup (v2) limit; None when unknown."""
    available = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    try:  # a container's limit, below what the host has free
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        if limit != "max":
            used = int(open("/sys/fs/cgroup/memory.current").read())
            available = min(available, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return available


def fits_in_memory(nbytes: int, processes: int = 1, room: float = 0.5) -> tuple[bool, str]:
    """Whether ``processes`` copies of ``nbytes`` take under ``room`` of the free memory, and the words that say so."""
    available = memory_available()
    if available is None:  # no way to know: small sets in memory, as before this was asked
        return nbytes * processes < 2e9, "the free memory is unknown here"
    share = f" for each of {processes} processes" if processes > 1 else ""
    if nbytes * processes < room * available:
        return True, f"under half of the {gib(available)} of free memory{share}"
    return False, f"more than half of the {gib(available)} of free memory{share}"


def threads() -> int:
    """Threads for work that releases the GIL: one per core and one more, at most 16."""
    return min(16, (os.cpu_count() or 1) + 1)


@cache
def pool() -> ThreadPoolExecutor:
    """The one thread pool: decoding, cache reads, checksums and cache keys (Pillow, libjpeg, pread, zlib and hashlib release the GIL)."""
    return ThreadPoolExecutor(max_workers=threads(), thread_name_prefix="simsiam")


def cores() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@cache
def torch_workers() -> ThreadPoolExecutor:
    """Threads, one per core, whose torch operations each run on that thread alone.

    For work cut into independent pieces that the threads take in turns (the views of
    a batch, a few samples at a time): no OpenMP team, so no thread waits at a barrier
    for another that the scheduler has set aside, and the pieces come out the same
    whatever the number of threads.
    """
    import torch

    n = cores()
    ready = threading.Barrier(n + 1)

    def one_thread() -> None:
        torch.set_num_threads(1)
        torch.get_num_threads()  # torch sets a thread's count once, from the process's: now, at 1

    workers = ThreadPoolExecutor(max_workers=n, thread_name_prefix="simsiam-torch", initializer=one_thread)
    own = torch.get_num_threads()
    started = [workers.submit(ready.wait) for _ in range(n)]  # each holds a thread, so all n start now
    ready.wait()
    wait(started)
    torch.set_num_threads(own)  # the process's count (and this thread's) as it was
    return workers


# A forked child has none of its parent's threads: it makes its own pools when it needs them.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=pool.cache_clear)
    os.register_at_fork(after_in_child=torch_workers.cache_clear)


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX).

    There bf16 autocast trains a CIFAR ResNet-18 2.3x faster than float32 (README,
    "Speed"). Without it bf16 may be emulated in software, so float32 stays the default there.
    """
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, hence the guard
    try:
        return bool(probe and probe())
    except RuntimeError:
        return False


class OthersMeter:
    """How many of this process's CPUs the machine's other processes kept busy, between two readings.

    From /proc/stat (the busy time of each CPU this process may run on) less this
    process's own CPU time (``os.times``), over the wall time between readings.
    ``reading()`` is None where /proc/stat is missing (not Linux) or unreadable.

    >>> meter = OthersMeter()
    >>> others = meter.reading()
    >>> others is None or 0 <= others <= meter.cores
    True
    """

    def __init__(self) -> None:
        self.cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
        self.cores = cores()
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        """(wall seconds, busy seconds of our CPUs since boot, this process's CPU seconds)."""
        try:
            with open("/proc/stat") as fh:
                text = fh.read()
            tick = os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, AttributeError):
            return None
        busy = 0
        for line in text.splitlines():
            name, _, fields = line.partition(" ")
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in self.cpus:
                user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields.split()[:7])
                busy += user + nice + system + irq + softirq  # not idle, iowait, or steal (the hypervisor's)
        own = os.times()
        return time.monotonic(), busy / tick, own.user + own.system

    def reading(self) -> float | None:
        """CPUs' worth of the others' work since the last reading (or since this meter was made)."""
        now, last = self._sample(), self._last
        self._last = now
        if now is None or last is None or now[0] - last[0] <= 0:
            return None
        others = (now[1] - last[1]) - (now[2] - last[2])
        return min(float(self.cores), max(0.0, others / (now[0] - last[0])))
