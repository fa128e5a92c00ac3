"""Per-sample augmentation seeds (pit_det/datasets/sampler.py): the exact-resume test
(tests/test_reliability.py) proves that a resumed run repeats the uninterrupted one, which would
also hold if every sample got the same flip; these pin down that augmentations still vary across
samples and epochs, repeat for the same (seed, epoch, index), and leave the process's own random
streams alone."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdet.registry import DATASETS
from mmengine.config import Config
from mmengine.registry import init_default_scope

import pit_det  # noqa: F401  registers the dataset, transforms and sampler
from pit_det.datasets.sampler import SeededSampler
from pit_det.datasets.toy import make_split

ROOT = Path(__file__).resolve().parents[1]
init_default_scope('mmdet')


@pytest.fixture(scope='module')
def train_set(tmp_path_factory):
    """The toy config's training set (its own pipeline: RandomFlip(0.5), Resize) on 24 images."""
    root = tmp_path_factory.mktemp('toy')
    make_split(root, 'train', 24, seed=0)
    cfg = Config.fromfile(str(ROOT / 'configs/toy/deformable_detr_pit_s_toy.py'))
    dataset = cfg.train_dataloader.dataset
    dataset.data_root = str(root) + '/'
    return DATASETS.build(dataset)


def flips(dataset, indices) -> list:
    return [bool(dataset[i]['data_samples'].flip) for i in indices]


def test_each_sample_flips_by_its_own_seed_and_epoch(train_set):
    sampler = SeededSampler(train_set, shuffle=True, seed=7)
    epoch0 = sorted(sampler, key=int)
    assert [int(i) for i in epoch0] == list(range(len(train_set)))
    first = flips(train_set, epoch0)
    assert 0 < sum(first) < len(first)  # RandomFlip(0.5) varies across samples
    assert flips(train_set, epoch0) == first  # the same seeds give the same flips
    assert flips(train_set, epoch0[::-1]) == first[::-1]  # whatever order (worker) loads them
    sampler.set_epoch(1)
    assert flips(train_set, sorted(sampler, key=int)) != first  # another epoch, other flips


def test_the_process_streams_are_left_alone(train_set):
    """Loading a sample (num_workers=0 runs the pipeline in the training process) neither reads
    nor moves the process's Python, numpy and torch streams, which drive dropout."""
    index = next(iter(SeededSampler(train_set, shuffle=False, seed=0)))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    expected = random.random(), np.random.rand(), torch.rand(1)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    train_set[index]
    got = random.random(), np.random.rand(), torch.rand(1)
    assert got[:2] == expected[:2] and torch.equal(got[2], expected[2])


def test_gpu_streams_are_not_reseeded_per_sample(train_set, monkeypatch):
    """On a GPU, a sample's seed reaches no CUDA generator (torch.manual_seed would seed them all,
    and GPU dropout would follow each batch's last sample): CUDA's seeding is recorded here."""
    index = next(iter(SeededSampler(train_set, shuffle=False, seed=0)))
    seeded = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'manual_seed_all', seeded.append)
    monkeypatch.setattr(torch.cuda, '_is_in_bad_fork', lambda: False)
    train_set[index]
    assert seeded == []
