"""Training data whose random augmentations depend on (seed, epoch, sample) only.

mmengine seeds each data-loading worker once, when it starts. With ``persistent_workers=True``
(the shipped COCO configs) the workers' random streams then run on across epochs, so a run killed
mid-epoch and resumed (new workers, seeded as at epoch 1) flips, resizes and crops differently
from the uninterrupted run. Here the sampler tags every index with a seed derived from the run's
seed, the epoch and the index, and the dataset runs the pipeline under Python, numpy and torch
generators seeded with it: each sample's augmentation is the same whichever worker, process or
rank loads it, and however the run was interrupted.
"""

import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from mmdet.registry import DATA_SAMPLERS
from mmengine.dataset import DefaultSampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample of one epoch (numpy's SeedSequence mixes the three)."""
    return int(np.random.SeedSequence([seed % 2**32, epoch, index]).generate_state(1)[0])


class SeededIndex(int):
    """A dataset index carrying the seed of its sample's augmentation. An ``int``, so batch
    samplers (mmdet's ``AspectRatioBatchSampler`` reads ``dataset.get_data_info(index)``) and
    worker queues pass it through unchanged."""

    seed: int

    def __new__(cls, index: int, seed: int) -> 'SeededIndex':
        obj = super().__new__(cls, index)
        obj.seed = seed
        return obj

    def __reduce__(self):
        return SeededIndex, (int(self), self.seed)


@contextmanager
def seeded_generators(seed: int) -> Iterator[None]:
    """Run the block under Python's, numpy's and torch's global generators seeded with ``seed``,
    and give the process its own streams back afterwards (with ``num_workers=0`` the pipeline
    runs in the training process, whose torch stream drives dropout). The pipeline runs on CPU, so
    only torch's CPU generator is seeded: ``torch.manual_seed`` would reseed every CUDA generator too,
    and GPU dropout would follow each batch's last sample."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


@DATA_SAMPLERS.register_module()
class SeededSampler(DefaultSampler):
    """mmengine's ``DefaultSampler`` yielding :class:`SeededIndex` with ``seed = sample_seed(seed,
    epoch, index)``; the dataset must run its pipeline under that seed (``accepts_seeded_indices``).

    Args:
        dataset: The dataset, e.g. :class:`CheckedCocoDataset`.
        **kwargs: ``DefaultSampler``'s arguments (``shuffle``, ``seed``, ``round_up``).
    """

    def __init__(self, dataset, **kwargs) -> None:
        if not getattr(dataset, 'accepts_seeded_indices', False):
            raise TypeError(
                f"SeededSampler needs a dataset that runs its pipeline under the index's seed, "
                f'such as CheckedCocoDataset; got {type(dataset).__name__}. Use DefaultSampler instead.'
            )
        super().__init__(dataset, **kwargs)

    def __iter__(self) -> Iterator[SeededIndex]:
        for index in super().__iter__():
            yield SeededIndex(index, sample_seed(self.seed, self.epoch, index))
