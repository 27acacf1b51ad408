"""A resumable, reproducible training loader.

detectron2's default training loader restarts its sample stream and its augmentation
randomness when a run resumes, so a resumed run sees different data from an uninterrupted
one. Here every sample is a pure function of ``(seed, stream position)``: the position
picks the image through a per-epoch permutation and seeds the augmentation RNGs. A run
resumed at iteration ``i`` starts its stream at ``i * batch_size`` and trains on exactly
the samples the uninterrupted run would have used, whatever the number of workers.
Loaders never start more worker processes than this process may run on (:func:`cap_num_workers`).
"""
from __future__ import annotations

import itertools
import logging
import os
import random

import torch
import torch.utils.data as torchdata
from detectron2.data.common import DatasetFromList
from detectron2.utils import comm

from ..utils.seeding import mix_seeds, seed_rngs

__all__ = ["StreamDataset", "StreamSampler", "available_cpus", "build_pretrain_loader", "build_train_loader",
           "cap_num_workers", "set_loader_start"]

logger = logging.getLogger(__name__)
_capped_logged: set[tuple[int, int]] = set()


def available_cpus() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one, else the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def cap_num_workers(num_workers: int) -> int:
    """``num_workers`` capped at :func:`available_cpus` (more workers than cores only contend; PyTorch warns),
    with one log line per capped value."""
    cpus = available_cpus()
    if num_workers <= cpus:
        return num_workers
    if (num_workers, cpus) not in _capped_logged:
        _capped_logged.add((num_workers, cpus))
        # the training log's logger: the line shows where the run's other lines do
        logging.getLogger("detectron2").info("DataLoader num_workers=%d capped at %d, the CPU cores this process may "
                                             "use", num_workers, cpus)
    return cpus


class StreamDataset(torchdata.Dataset):
    """Maps a stream position to a mapped sample.

    Position p lies in epoch ``p // len(dataset)``; the image is that epoch's permutation
    (seeded by ``(seed, epoch)``) at ``p % len(dataset)``. A sample whose mapping raises or
    returns None is logged with its file name and replaced by a deterministic random other
    image (up to ``max_retries`` times), so one bad file never stops a run. A mapper with a
    ``map_in_stream(record, dataset, epoch)`` method is called through it: it may draw further records from
    ``dataset`` (with the seeded RNGs) and depend on the epoch (e.g. :class:`.mosaic.MosaicDetrDatasetMapper`).
    """

    def __init__(self, dataset: list, mapper, seed: int = 0, shuffle: bool = True, max_retries: int = 10):
        self.dataset = dataset if isinstance(dataset, DatasetFromList) else DatasetFromList(dataset, copy=False)
        if len(self.dataset) == 0:
            raise ValueError("The training dataset is empty.")
        self.mapper = mapper
        self.seed = seed
        self.shuffle = shuffle
        self.max_retries = max_retries
        self._perm_epoch, self._perm = None, None

    def __len__(self):  # the stream is infinite; DataLoader only needs indexability
        return 2**62

    def index_at(self, position: int) -> int:
        n = len(self.dataset)
        epoch, offset = divmod(position, n)
        if not self.shuffle:
            return offset
        if self._perm_epoch != epoch:
            g = torch.Generator().manual_seed(mix_seeds(self.seed, epoch))
            self._perm, self._perm_epoch = torch.randperm(n, generator=g), epoch
        return int(self._perm[offset])

    def __getitem__(self, position: int):
        index = self.index_at(position)
        for attempt in range(self.max_retries + 1):
            if attempt:
                index = random.Random(mix_seeds(self.seed, position, attempt)).randrange(len(self.dataset))
            record = self.dataset[index]
            seed_rngs(mix_seeds(self.seed, position, attempt, 1))
            try:
                if hasattr(self.mapper, "map_in_stream"):
                    sample = self.mapper.map_in_stream(record, self.dataset, position // len(self.dataset))
                else:
                    sample = self.mapper(record)
            except Exception as e:
                logger.warning("Skipping sample %s: %s: %s", record.get("file_name", index), type(e).__name__, e)
                continue
            if sample is not None:
                return sample
            logger.warning("Skipping sample %s: the mapper returned None", record.get("file_name", index))
        raise RuntimeError(f"{self.max_retries + 1} samples in a row failed at stream position {position}; "
                           "see the warnings above for the files and the errors.")


class StreamSampler(torchdata.Sampler):
    """Infinite stream positions of this rank: ``start*W + rank, (start+1)*W + rank, ...``.

    ``start`` counts this rank's samples already consumed (set it before iterating).
    """

    def __init__(self, start: int = 0, rank: int | None = None, world_size: int | None = None):
        self.start = start
        self.rank = comm.get_rank() if rank is None else rank
        self.world_size = comm.get_world_size() if world_size is None else world_size

    def __iter__(self):
        for k in itertools.count(self.start):
            yield k * self.world_size + self.rank


def _collate_list(batch):
    return batch


def build_train_loader(dataset: list, mapper, total_batch_size: int, num_workers: int = 0,
                       seed: int = 0, shuffle: bool = True, collate_fn=None) -> torchdata.DataLoader:
    """A training loader of batches of ``total_batch_size / world_size`` mapped samples.

    Batches are lists of dicts (detectron2's convention) unless ``collate_fn`` is given,
    e.g. :func:`disco_detr.data.pretrain_mapper.collate_paired_views`. ``num_workers`` is capped at the
    CPU cores this process may use.
    """
    num_workers = cap_num_workers(num_workers)
    world = comm.get_world_size()
    if total_batch_size <= 0 or total_batch_size % world:
        raise ValueError(f"total_batch_size={total_batch_size} must be a positive multiple of the "
                         f"number of processes ({world}).")
    sampler = StreamSampler()
    batch_sampler = torchdata.BatchSampler(sampler, total_batch_size // world, drop_last=True)
    return torchdata.DataLoader(
        StreamDataset(dataset, mapper, seed=seed, shuffle=shuffle),
        batch_sampler=batch_sampler, num_workers=num_workers, collate_fn=collate_fn or _collate_list,
        persistent_workers=False, prefetch_factor=2 if num_workers > 0 else None,
    )


def build_pretrain_loader(dataset: list, mapper, total_batch_size: int, num_workers: int = 0,
                          seed: int = 0) -> torchdata.DataLoader:
    """:func:`build_train_loader` for pre-training: batches are what the mapper's own ``collate`` makes
    (:class:`~disco_detr.structures.PairedViewBatch` from
    :func:`disco_detr.data.pretrain_mapper.collate_paired_views` for DisCo / Siamese DETR,
    :class:`~disco_detr.structures.SingleViewBatch` from :func:`disco_detr.data.detreg_mapper.collate_single_views`
    for DETReg)."""
    if not callable(getattr(mapper, "collate", None)):
        raise TypeError(f"{type(mapper).__name__} has no collate(samples) to batch its samples for pre-training")
    return build_train_loader(dataset, mapper, total_batch_size, num_workers, seed, collate_fn=mapper.collate)


def set_loader_start(loader: torchdata.DataLoader, iteration: int) -> None:
    """Make a loader from :func:`build_train_loader` resume at ``iteration`` (before iterating)."""
    batch_sampler = loader.batch_sampler
    batch_sampler.sampler.start = iteration * batch_sampler.batch_size
