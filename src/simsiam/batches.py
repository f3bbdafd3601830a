"""Training batches: which images go into each step, and where their pixels come from.

Data flows one way: the decoded uint8 cache -> :class:`BatchSource` -> (device) ->
augmentation. :class:`ShardedBatches` decides the order (one shard per process,
reshuffled every epoch, resumable mid-epoch); :class:`BatchSource` turns a batch
of indices into a (B, 3, S, S) uint8 batch; :class:`Batches` joins the two into
the iterable Lightning trains on, whose position goes into every checkpoint.

>>> source = BatchSource(torch.zeros(10, 3, 8, 8, dtype=torch.uint8))
>>> batches = Batches(source, ShardedBatches(len(source), batch_size=4))
>>> len(batches), [tuple(b.shape) for b in batches]
(2, [(4, 3, 8, 8), (4, 3, 8, 8)])
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


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
    """The decoded images, (N, 3, S, S) uint8, handed out a batch at a time by index.

    The images live where training reads them fastest: on the training GPU when
    they fit there with room to spare, else in pinned host memory, from which each
    batch is gathered into pinned memory so that its copy to the GPU overlaps.
    """

    def __init__(self, images: torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to_device(self, device: torch.device | str, room: float = 0.5) -> BatchSource:
        """The source to train on ``device``: moved there if it takes under ``room`` of the free memory, else pinned."""
        device = torch.device(device)
        images = self.images
        if device.type != "cuda" or images.device.type == "cuda":
            return self
        free, _ = torch.cuda.mem_get_info(device)
        if images.numel() < room * free:
            return BatchSource(images.to(device))
        return self if images.is_pinned() else BatchSource(images.pin_memory())

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        """The images at ``index`` (B,), as (B, C, H, W) uint8 on the source's device."""
        images = self.images
        if images.device.type == "cuda":
            # A copy from pageable memory would wait for the GPU; from pinned memory it queues.
            return images[index.pin_memory().to(images.device, non_blocking=True)]
        if not images.is_pinned():
            return images[index]
        out = torch.empty((index.shape[0], *images.shape[1:]), dtype=images.dtype, pin_memory=True)
        return torch.index_select(images, 0, index, out=out)


class Batches:
    """What Lightning trains on: this process's uint8 batches in the sampler's order.

    Lightning treats it as a resumable loader (``state_dict``) and reshuffles it
    through ``sampler.set_epoch``; no worker processes and no RNG of its own, so
    making an iterator never advances the global RNG that the augmentations draw from.
    """

    def __init__(self, source: BatchSource, sampler: ShardedBatches):
        self.source, self.sampler = source, sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for index in self.sampler:
            yield self.source[index]

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)
