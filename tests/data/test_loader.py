"""Loaders: same seed, same batches; skipped files dropped and counted
(data/loading/process_loader.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from pipeline_reference import Reference, TransformedDataset

from alexnet.data import ArraySource, DataStats, make_loader
from alexnet.recipe import DataRecipe


@pytest.fixture
def dataset() -> TransformedDataset:
    """20 random 10×10 images, augmented the paper's way at a tiny scale."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 10, 10, 3), dtype=np.uint8)
    source = ArraySource("random", ["a", "b"], images, [i % 2 for i in range(20)])
    stats = DataStats(
        10,
        torch.full((3, 10, 10), 128.0),
        torch.ones(3),
        torch.tensor([900.0, 100.0, 25.0]),
        torch.eye(3),
    )
    recipe = DataRecipe(image_size=10, crop_size=7, flip=True, pca_lighting=True)
    return TransformedDataset(source, Reference(recipe, stats, train=True))


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    return list(loader)


def assert_same(first, second) -> None:
    assert len(first) == len(second)
    for (images_a, labels_a, skipped_a), (images_b, labels_b, skipped_b) in zip(
        first, second, strict=True
    ):
        assert torch.equal(images_a, images_b) and torch.equal(labels_a, labels_b)
        assert skipped_a == skipped_b


def test_same_seed_same_batches(dataset):
    first = batches(make_loader(dataset, 8, train=True, workers=0, seed=5, epoch=2))
    second = batches(make_loader(dataset, 8, train=True, workers=0, seed=5, epoch=2))
    assert_same(first, second)


def test_batches_do_not_depend_on_the_number_of_workers(dataset):
    alone = batches(make_loader(dataset, 8, train=True, workers=0, seed=1))
    assert_same(alone, batches(make_loader(dataset, 8, train=True, workers=2, seed=1)))


def test_different_seeds_or_epochs_give_different_augmentation(dataset):
    base = batches(make_loader(dataset, 20, train=False, workers=0, seed=0))[0][0]
    other_seed = batches(make_loader(dataset, 20, train=False, workers=0, seed=1))[0][0]
    other_epoch = batches(make_loader(dataset, 20, train=False, workers=0, seed=0, epoch=1))[0][0]
    # train=False keeps the order, so item k is the same image in all three
    assert not torch.equal(base, other_seed)
    assert not torch.equal(base, other_epoch)
    assert all(not torch.equal(a, b) for a, b in zip(base, other_seed, strict=True))


def test_training_order_is_a_seeded_permutation_per_epoch(dataset):
    def order(seed, epoch):
        loader = make_loader(dataset, 4, train=True, workers=0, seed=seed, epoch=epoch)
        return [label for _, labels, _ in loader for label in labels.tolist()]

    assert order(0, 0) == order(0, 0)
    orders = {tuple(order(seed, epoch)) for seed in (0, 1) for epoch in (0, 1, 2)}
    assert len(orders) > 1


@pytest.mark.parametrize("workers", [0, 2])
def test_a_second_pass_is_the_same_epoch_until_set_epoch(dataset, workers):
    loader = make_loader(dataset, 8, train=True, workers=workers, seed=3, epoch=0)
    first = batches(loader)
    assert_same(batches(loader), first)  # an extra pass shifts nothing
    loader.sampler.set_epoch(1)
    next_epoch = batches(loader)
    new_loader = make_loader(dataset, 8, train=True, workers=0, seed=3, epoch=1)
    assert_same(next_epoch, batches(new_loader))
    assert not torch.equal(next_epoch[0][0], first[0][0])


def test_loading_leaves_the_callers_random_state_alone(dataset):
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    batches(make_loader(dataset, 8, train=True, workers=0))
    assert torch.equal(torch.rand(3), expected)


def test_last_partial_batch_dropped_only_when_there_is_more_than_one(dataset):
    sizes = [len(images) for images, _, _ in make_loader(dataset, 8, train=True, workers=0)]
    assert sizes == [8, 8]
    sizes = [len(images) for images, _, _ in make_loader(dataset, 32, train=True, workers=0)]
    assert sizes == [20]  # a set smaller than one batch still trains
    sizes = [len(images) for images, _, _ in make_loader(dataset, 8, train=False, workers=0)]
    assert sizes == [8, 8, 4]


def test_batch_shapes_and_loader_settings(dataset):
    loader = make_loader(dataset, 8, train=True, workers=2)
    images, labels, skipped = next(iter(loader))
    assert images.shape == (8, 3, 7, 7) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and skipped == 0
    assert loader.persistent_workers and not loader.pin_memory
    # a validation loader holds no workers between its passes (nor while training runs)
    assert not make_loader(dataset, 8, train=False, workers=2).persistent_workers
    # one worker per core this process may run on, however many that is
    assert make_loader(dataset, 8, train=True, workers=-1).num_workers == len(
        os.sched_getaffinity(0)
    )
    assert make_loader(dataset, 8, train=False, workers=0, device="cuda").pin_memory


def test_skipped_items_are_dropped_and_counted(dataset):
    class Flaky(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, index):
            return None if index in (1, 4) else dataset[index]

    results = batches(make_loader(Flaky(), 3, train=False, workers=0))
    assert [(len(images), skipped) for images, _, skipped in results] == [(2, 1), (2, 1)]
    all_skipped = batches(make_loader(Flaky(), 1, train=False, workers=0))[1]
    assert all_skipped[0].shape[0] == 0 and all_skipped[2] == 1


@pytest.mark.parametrize("world", [2, 4])
def test_ranks_together_see_the_batches_one_process_sees(dataset, world):
    """Data parallelism: rank r takes the r-th share of every global batch, augmented alike."""
    options = dict(train=True, workers=0, seed=3, epoch=2)
    whole = batches(make_loader(dataset, 8, **options))
    shares = [
        batches(make_loader(dataset, 8, **options, rank=rank, world=world)) for rank in range(world)
    ]
    assert [len(share) for share in shares] == [len(whole)] * world == [2] * world
    for step, (images, labels, _) in enumerate(whole):
        assert torch.equal(torch.cat([share[step][0] for share in shares]), images)
        assert torch.equal(torch.cat([share[step][1] for share in shares]), labels)


def test_a_resumed_pass_skips_the_steps_already_taken(dataset):
    whole = batches(make_loader(dataset, 4, train=True, workers=0, seed=3, epoch=2))
    loader = make_loader(dataset, 4, train=True, workers=0, seed=3, epoch=2, rank=1, world=2)
    loader.sampler.set_epoch(2, skip_steps=3)
    assert len(loader) == len(whole) - 3
    rest = batches(loader)
    for (images, labels, _), (expected, expected_labels, _) in zip(rest, whole[3:], strict=True):
        assert torch.equal(images, expected[2:]) and torch.equal(labels, expected_labels[2:])
    loader.sampler.set_epoch(3)
    assert len(batches(loader)) == len(whole)  # the next epoch is whole again


def test_torchruns_local_processes_share_the_cores(monkeypatch):
    from alexnet.data.loading.process_loader import default_workers

    cores = len(os.sched_getaffinity(0))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_workers() == max(1, cores // 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(4 * cores))  # more processes than cores
    assert default_workers() == 1
