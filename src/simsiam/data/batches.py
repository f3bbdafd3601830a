"""Batches of images: which images go into each step, and where their pixels come from.

Data flows one way: the decoded uint8 cache -> :class:`BatchSource` -> (device) ->
augmentation. :class:`ShardedBatches` decides the order (one shard per process,
reshuffled every epoch, resumable mid-epoch); :class:`BatchSource` turns batches
of indices into (B, C, S, S) uint8 batches, from a tensor on the GPU, from pinned
host memory, or from the disk cache with the next batches read ahead in a
background thread; :class:`Batches` joins the two into the iterable Lightning
trains on, whose position goes into every checkpoint. :func:`in_order` hands out
a whole set in order, for feature extraction (the online kNN, evaluate, embed,
neighbors, map), from the same source.

>>> source = BatchSource(torch.zeros(10, 3, 8, 8, dtype=torch.uint8))
>>> batches = Batches(source, ShardedBatches(len(source), batch_size=4))
>>> len(batches), [tuple(b.shape) for b in batches]
(2, [(4, 3, 8, 8), (4, 3, 8, 8)])
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence

import torch

from simsiam.data.disk import DiskImages
from simsiam.system import fits_in_memory, gib


def placement(nbytes: int, device: torch.device | str, data_on: str = "auto", processes: int = 1, on_disk: bool = True) -> tuple[str, str]:
    """Where ``nbytes`` of decoded images are kept to train on ``device``: ("gpu", "memory" or "disk", why, for the log).

    The one place this is decided (``--data-on``, :data:`simsiam.data.DATA_ON`):

    - on the GPU when asked (``gpu``), or with ``auto`` when they take under half of its free memory;
    - else in memory when asked, or with ``auto`` when ``processes`` copies take under half of the
      free memory (pinned, when training on a GPU);
    - else on disk, read in prefetched batches from the image cache (``disk``, also ``gpu`` while
      no GPU is asked about: the images then go to it in chunks, never all through memory).

    ``on_disk=False``: the images have no disk copy (CIFAR-10 batches, the demo set): they stay in memory.
    """
    device = torch.device(device)
    if device.type == "cuda" and data_on in ("auto", "gpu"):
        free, _ = torch.cuda.mem_get_info(device)
        if data_on == "gpu":
            return "gpu", "--data-on gpu"
        if nbytes < 0.5 * free:
            return "gpu", f"under half of the GPU's {gib(free)} of free memory"
    if not on_disk:
        held = {"disk": "CIFAR-10 batches and the demo set are always held in memory", "memory": "--data-on memory"}
        return "memory", held.get(data_on, "it fits in memory")
    if data_on in ("disk", "gpu"):
        return "disk", f"--data-on {data_on}"
    if data_on == "memory":
        return "memory", "--data-on memory"
    fits, why = fits_in_memory(nbytes, processes)
    return ("memory" if fits else "disk"), why


class ShardedBatches:
    """Batches of indices into the image cache: one shard per process, reshuffled every epoch.

    Every epoch draws one permutation from (seed, epoch), identical on all
    processes; process r takes positions r, r + world, ... so the shards are
    disjoint and together cover the epoch. The incomplete last batch is dropped
    (batch norm and the loss want full batches).

    Resumable mid-epoch: ``state_dict`` records how many batches of the epoch were
    handed out, and after ``load_state_dict`` the next pass over that epoch skips
    them, so a run stopped mid-epoch continues with the very next batch.
    """

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.n, self.batch_size, self.rank, self.world_size, self.seed = n, batch_size, rank, world_size, seed
        self.epoch = 0
        self.handed_out = 0  # batches of the current epoch yielded so far
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches done) from a checkpoint

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this before each epoch
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // (self.batch_size * self.world_size)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches": self.handed_out}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_at = (int(state["epoch"]), int(state["batches"]))

    def __iter__(self) -> Iterator[torch.Tensor]:
        skip = 0
        if self._resume_at is not None:
            epoch, done = self._resume_at
            self._resume_at = None
            skip = done if epoch == self.epoch else 0
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.n, generator=g)
        shard = perm[self.rank :: self.world_size]
        self.handed_out = skip
        for i in range(skip, len(self)):
            # Counted before the yield: Lightning does not prefetch from a loader of known
            # length, so at a batch's end this is the number of batches trained this epoch.
            self.handed_out = i + 1
            yield shard[i * self.batch_size : (i + 1) * self.batch_size]


class BatchSource:
    """The decoded images, (N, C, S, S) uint8, handed out a batch at a time by index.

    Where they live is chosen by :meth:`place`: on the training GPU when they fit
    there with room to spare, else in pinned host memory (each batch gathered into
    pinned memory so that its copy to the GPU overlaps), else left in the disk
    cache (:class:`~simsiam.data.disk.DiskImages`), from which a background
    thread reads the next batches ahead (into pinned memory on a GPU) while the
    current one trains. :meth:`describe` says which, and why.
    """

    def __init__(self, images: torch.Tensor | DiskImages, why: str = ""):
        if isinstance(images, torch.Tensor) and (images.dtype != torch.uint8 or images.dim() != 4):
            raise ValueError(f"images must be (N, C, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
        self.images, self.why = images, why
        self.prefetch = 3  # batches read ahead from disk

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def where(self) -> str:
        """gpu, memory or disk."""
        if isinstance(self.images, DiskImages):
            return "disk"
        return "gpu" if self.images.device.type == "cuda" else "memory"

    @classmethod
    def place(cls, images: torch.Tensor | DiskImages, device: torch.device | str, data_on: str = "auto", processes: int = 1) -> BatchSource:
        """The source to train on ``device``, its images where :func:`placement` decides."""
        device = torch.device(device)
        if images.device.type == "cuda":
            return cls(images, "already there")
        nbytes = images.nbytes if isinstance(images, DiskImages) else images.numel()
        where, why = placement(nbytes, device, data_on, processes, on_disk=isinstance(images, DiskImages))
        if where == "gpu":
            return cls(images.to_tensor(device) if isinstance(images, DiskImages) else images.to(device), why)
        if where == "disk":
            return cls(images.view(), why)  # counters of its own: what this source read
        if isinstance(images, DiskImages):
            images = images.to_tensor()
        if device.type == "cuda" and not images.is_pinned():
            images = images.pin_memory()
        return cls(images, why)

    def describe(self) -> str:
        """One line for the log: how big the images are, where they are read from, and why."""
        size, c = self.images.shape[-1], self.images.shape[1]
        nbytes = self.images.nbytes if isinstance(self.images, DiskImages) else self.images.numel()
        what = f"images: {gib(nbytes)} decoded at {size} px" + (f", {c} channels" if c != 3 else "")
        if self.where == "gpu":
            return f"{what}, held on the GPU: {self.why}"
        if self.where == "memory":
            pinned = " (pinned, copied to the GPU as each batch is taken)" if self.images.is_pinned() else ""
            return f"{what}, held in memory{pinned}: {self.why}"
        kind = "JPEGs decoded per batch" if self.images.entry.format == "jpeg" else "raw pixels"
        return f"{what}, kept on disk ({self.images.where}, {kind}) and read in prefetched batches: {self.why}"

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        """The images at ``index`` (B,), as (B, C, H, W) uint8 on the source's device (pinned when the images are)."""
        images = self.images
        if isinstance(images, DiskImages):
            return images.read(index)
        if images.device.type == "cuda":
            # A copy from pageable memory would wait for the GPU; from pinned memory it queues.
            return images[index.pin_memory().to(images.device, non_blocking=True)]
        if not images.is_pinned():
            return images[index]
        out = torch.empty((index.shape[0], *images.shape[1:]), dtype=images.dtype, pin_memory=True)
        return torch.index_select(images, 0, index, out=out)

    def batches(self, plan: Sequence[torch.Tensor], device: torch.device | str | None = None) -> Iterator[torch.Tensor]:
        """The batches of index tensors ``plan``, in order, on ``device`` (default: where the images are)."""
        device = torch.device(device) if device is not None else None
        if isinstance(self.images, DiskImages):
            yield from _prefetched(self.images, plan, device, self.prefetch)
            return
        for index in plan:
            batch = self[index]
            yield batch if device is None or batch.device == device else batch.to(device, non_blocking=batch.is_pinned())


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def _prefetched(images: DiskImages, plan: Sequence[torch.Tensor], device: torch.device | None, depth: int) -> Iterator[torch.Tensor]:
    """Batches read from disk by a background thread, ``depth`` ahead of the consumer.

    On a GPU each batch is read into pinned memory and copied with non_blocking
    (the caching host allocator keeps a pinned block until its copy is done); a
    JPEG entry's bytes are decoded by nvJPEG in the consuming thread, on the
    default stream. The thread touches no random state, so the epoch order and
    the views stay bit for bit those of a source in memory.
    """
    cuda = device is not None and device.type == "cuda"
    on_gpu_decode = cuda and images.entry.format == "jpeg"
    ready: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            if cuda:
                torch.cuda.set_device(device)  # pinned memory from this thread, without a context on GPU 0 in every DDP process
            for index in plan:
                item = images.read_encoded(index) if on_gpu_decode else images.read(index, pin_memory=cuda)
                if not offer(item):
                    return
        except BaseException as e:  # given to the consumer, which raises it
            offer(_Failed(e))

    thread = threading.Thread(target=work, name="simsiam-prefetch", daemon=True)
    thread.start()
    try:
        for _ in range(len(plan)):
            item = ready.get()
            if isinstance(item, _Failed):
                raise item.error
            if on_gpu_decode:
                yield images.decode_on(item, device)
            elif cuda:
                yield item.to(device, non_blocking=True)
            else:
                yield item if device is None else item.to(device)
    finally:
        stop.set()  # the consumer stopped (an epoch's end, an error, Ctrl-C): the thread ends within 0.1 s
        thread.join(timeout=10)


def in_order(images: torch.Tensor | DiskImages, batch_size: int, device: torch.device | str | None = None) -> Iterator[torch.Tensor]:
    """Every image, ``batch_size`` at a time in order, on ``device``: slices of a tensor, or prefetched reads from disk."""
    n = images.shape[0]
    if isinstance(images, DiskImages):
        plan = [torch.arange(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
        yield from BatchSource(images).batches(plan, device)
        return
    for start in range(0, n, batch_size):
        batch = images[start : start + batch_size]
        yield batch if device is None else batch.to(device, non_blocking=True)


def take(images: torch.Tensor | DiskImages, index) -> torch.Tensor | DiskImages:
    """The images at ``index``: a tensor's rows, or a view of images on disk (nothing read)."""
    return images.subset(index) if isinstance(images, DiskImages) else images[index]


class Batches:
    """What Lightning trains on: this process's uint8 batches in the sampler's order, on ``device``.

    Lightning treats it as a resumable loader (``state_dict``) and reshuffles it
    through ``sampler.set_epoch``; no worker processes and no RNG of its own, so
    making an iterator never advances the global RNG that the augmentations draw
    from. Its position counts the batches handed to Lightning, not those read
    ahead: a checkpoint saved mid-epoch resumes with the very next batch.
    """

    def __init__(self, source: BatchSource, sampler: ShardedBatches, device: torch.device | str | None = None):
        self.source, self.sampler, self.device = source, sampler, device
        self._done = 0

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[torch.Tensor]:
        plan = list(self.sampler)  # this epoch's remaining batches (a resumed epoch skips those done)
        self._done = len(self.sampler) - len(plan)
        for batch in self.source.batches(plan, self.device):
            # Counted before the yield: Lightning does not prefetch from a loader of known
            # length, so at a batch's end this is the number of batches trained this epoch.
            self._done += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self._done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)
