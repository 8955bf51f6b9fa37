"""The batched path (data/batches.py, data/windows.py) against the per-image reference
(pipeline_reference.py): same seeds, same draws, the same float images; uint8 on the way."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pipeline_reference import Reference, TransformedDataset, ten_crops

from alexnet.data import ArraySource, DataStats, make_batches, make_loader, open_source
from alexnet.data.loading.items import CropItems, collate_crops
from alexnet.data.loading.windows import cut_window, cut_windows, draw_window, eval_windows
from alexnet.data.store.prepare import Settings, prepare_store
from alexnet.data.transform.batch_transform import BatchTransform
from alexnet.placement.kernels import build_kernels
from alexnet.recipe import DataRecipe

SIZE, CROP = 12, 9


def random_stats(size: int = SIZE) -> DataStats:
    generator = torch.Generator().manual_seed(0)
    eigenvectors = torch.linalg.qr(torch.randn(3, 3, generator=generator))[0]
    return DataStats(
        size,
        torch.rand(3, size, size, generator=generator) * 255,  # a mean image with structure
        torch.tensor([50.0, 60.0, 70.0]),
        torch.tensor([900.0, 100.0, 25.0]),
        eigenvectors,
    )


@pytest.fixture
def source() -> ArraySource:
    """30 random images of 14×17: §2 rescales and crops them to 12×12 on the way."""
    images = np.random.default_rng(1).integers(0, 256, (30, 14, 17, 3), dtype=np.uint8)
    return ArraySource("random", ["a", "b", "c"], images, [i % 3 for i in range(30)])


def per_image(source, transform, batch_size, *, train, seed=4, epoch=2):
    loader = make_loader(
        TransformedDataset(source, transform), batch_size, train=train, workers=0,
        seed=seed, epoch=epoch,
    )  # fmt: skip
    return list(loader)


def batched(source, recipe, stats, batch_size, *, train, seed=4, epoch=2, **options):
    batches = make_batches(
        source, recipe, stats, batch_size, train=train, workers=options.pop("workers", 0),
        seed=seed, epoch=epoch, **options,
    )  # fmt: skip
    return list(batches)


def assert_agree(reference, ours) -> None:
    assert len(reference) == len(ours)
    for (images_a, labels_a, skipped_a), (images_b, labels_b, skipped_b) in zip(
        reference, ours, strict=True
    ):
        assert images_b.dtype == torch.float32 and images_b.shape == images_a.shape
        # The lighting shift is one (3,)·(3, 3) product per image against one (B, 3)·(3, 3)
        # product per batch: the same sums, rounded alike to within float32's last bits.
        torch.testing.assert_close(images_b, images_a, rtol=0, atol=1e-4)
        assert torch.equal(labels_a, labels_b) and skipped_a == skipped_b


@pytest.mark.parametrize("input_scale", ["raw", "standardised"])
@pytest.mark.parametrize("flip, lighting", [(True, True), (False, False), (True, False)])
def test_training_batches_equal_the_per_image_pipeline(source, input_scale, flip, lighting):
    recipe = DataRecipe(
        image_size=SIZE, crop_size=CROP, flip=flip, pca_lighting=lighting, input_scale=input_scale
    )
    stats = random_stats()
    reference = per_image(source, Reference(recipe, stats, train=True), 8, train=True)
    assert_agree(reference, batched(source, recipe, stats, 8, train=True))


@pytest.mark.parametrize("ten_crop", [False, True])
def test_evaluation_batches_equal_the_per_image_pipeline(source, ten_crop):
    recipe = DataRecipe(image_size=SIZE, crop_size=CROP, input_scale="standardised")
    stats = random_stats()
    transform = Reference(recipe, stats, train=False, ten_crop=ten_crop)
    reference = per_image(source, transform, 7, train=False)
    ours = batched(source, recipe, stats, 7, train=False, ten_crop=ten_crop)
    assert ours[0][0].shape == ((7, 10, 3, CROP, CROP) if ten_crop else (7, 3, CROP, CROP))
    assert_agree(reference, ours)


def test_batches_do_not_depend_on_the_number_of_workers(source):
    recipe = DataRecipe(image_size=SIZE, crop_size=CROP)
    stats = random_stats()
    alone = batched(source, recipe, stats, 8, train=True, workers=0)
    for (a, labels_a, _), (b, labels_b, _) in zip(
        alone, batched(source, recipe, stats, 8, train=True, workers=2), strict=True
    ):
        assert torch.equal(a, b) and torch.equal(labels_a, labels_b)


def test_the_batch_travels_as_uint8_crops(source):
    recipe = DataRecipe(image_size=SIZE, crop_size=CROP)
    batches = make_batches(source, recipe, random_stats(), 8, train=True, workers=0)
    crops, labels, skipped = next(iter(batches.loader))
    assert crops.pixels.dtype == torch.uint8 and crops.pixels.shape == (8, 3, CROP, CROP)
    assert crops.windows.shape == (8, 3) and crops.alpha.shape == (8, 3)


def test_a_drawn_window_is_uniform_and_the_stream_of_one_draw_at_a_time():
    """Each of the 5 positions about 1/5 of the time, mirrored about 1/2 (5,000 draws, within
    5 sigma); and the values torch's generator gives for top, left and the coin drawn one by
    one, so a run's crops do not depend on how the draws are batched."""
    draws = [draw_window(8, 4, True, torch.Generator().manual_seed(seed)) for seed in range(5000)]
    tops, lefts, flips = torch.tensor(draws, dtype=torch.float64).T
    for column in (tops, lefts):
        counts = torch.bincount(column.long(), minlength=5).double()
        assert ((counts - 1000).abs() < 5 * (5000 * 0.2 * 0.8) ** 0.5).all()
    assert abs(flips.sum().item() - 2500) < 5 * (5000 * 0.25) ** 0.5
    for seed in range(50):
        generator = torch.Generator().manual_seed(seed)
        one_by_one = (
            int(torch.randint(0, 5, (), generator=generator)),
            int(torch.randint(0, 5, (), generator=generator)),
            bool(torch.rand((), generator=generator) < 0.5),
        )
        assert draw_window(8, 4, True, torch.Generator().manual_seed(seed)) == one_by_one


def test_cut_windows_gathers_what_slicing_cuts():
    images = torch.randint(0, 256, (4, 3, 10, 10), dtype=torch.uint8)
    windows = torch.tensor([[0, 0, 0], [3, 1, 1], [4, 4, 0], [2, 0, 1]])
    cut = cut_windows(images, windows, 6)  # (4, 3, 6, 6)
    for b, (top, left, flipped) in enumerate(windows.tolist()):
        expected = images[b, :, top : top + 6, left : left + 6].numpy()
        expected = expected[:, :, ::-1] if flipped else expected
        assert np.array_equal(cut[b].numpy(), expected)
        assert torch.equal(cut_window(images[b], windows[b], 6), torch.from_numpy(expected.copy()))


def test_the_ten_windows_are_ten_crops_order():
    image = torch.arange(3 * 11 * 11, dtype=torch.float32).view(3, 11, 11)
    windows = eval_windows(11, 6, ten_crop=True)  # (10, 3)
    assert torch.equal(cut_windows(image[None], windows[None], 6)[0], ten_crops(image, 6))


@pytest.mark.parametrize("ten_crop", [False, True])
def test_decoding_jpeg_bytes_with_the_batch_equals_decoding_in_the_workers(
    image_tree, tmp_path, ten_crop
):
    """The GPU-decode path, run on the CPU: bytes and windows from the workers, the batch
    decoded and cut where the arithmetic runs, against crops cut in the workers."""
    prepare_store(
        open_source(str(image_tree)), tmp_path / "store", Settings(str(image_tree), SIZE),
        workers=0, progress=False,
    )  # fmt: skip
    store = open_source(str(tmp_path / "store")).train
    recipe = DataRecipe(image_size=SIZE, crop_size=CROP)
    stats = random_stats()
    for train in (True, False):
        transform = BatchTransform(recipe, stats, "cpu", lighting=train)
        results = []
        for encoded, workers in [(False, 0), (True, 0), (True, 2)]:
            items = CropItems(store, recipe, train=train, ten_crop=ten_crop, encoded=encoded)
            loader = make_loader(
                items, 6, train=train, workers=workers, seed=3, collate=collate_crops
            )
            results.append([(transform(crops), labels) for crops, labels, _ in loader])
        for other in results[1:]:
            for (a, labels_a), (b, labels_b) in zip(results[0], other, strict=True):
                assert torch.equal(a, b) and torch.equal(labels_a, labels_b)


def test_a_store_at_another_size_is_resized_as_it_is_read(image_tree, tmp_path, caplog):
    prepare_store(
        open_source(str(image_tree)), tmp_path / "store", Settings(str(image_tree), 20),
        workers=0, progress=False,
    )  # fmt: skip
    store = open_source(str(tmp_path / "store")).train
    assert store.stored_stats(SIZE) is None  # its statistics are of 20 px images
    recipe = DataRecipe(image_size=SIZE, crop_size=CROP)
    batches = batched(store, recipe, random_stats(), 8, train=False)
    assert batches[0][0].shape == (8, 3, CROP, CROP)
    assert "resized as it is read" in caplog.text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_decoding_agrees_with_the_cpu_path(image_tree, tmp_path, monkeypatch):
    """nvJPEG and libjpeg-turbo differ in their IDCT and chroma upsampling (by 3.9 grey levels
    on average for these noisy 4:2:0 JPEGs on an H200, torchvision 0.26), so the two paths are
    compared on the same decoded pixels: the CPU path is given the GPU decoder's images."""
    from torchvision.io import ImageReadMode, decode_jpeg

    prepare_store(
        open_source(str(image_tree)), tmp_path / "store", Settings(str(image_tree), 64),
        workers=0, progress=False,
    )  # fmt: skip
    store = open_source(str(tmp_path / "store")).train
    jpegs = [store.encoded(index) for index in range(len(store))]
    by_cpu = torch.stack(decode_jpeg(jpegs, mode=ImageReadMode.RGB))
    by_gpu = torch.stack(decode_jpeg(jpegs, mode=ImageReadMode.RGB, device="cuda")).cpu()
    assert (by_cpu.float() - by_gpu.float()).abs().mean() < 8  # a wrong decode is off by ~50
    monkeypatch.setattr(store, "_decoded", lambda index: by_gpu[index])
    recipe = DataRecipe(image_size=64, crop_size=56)
    stats = random_stats(64)
    cpu = batched(store, recipe, stats, 8, train=True)
    gpu = batched(store, recipe, stats, 8, train=True, device="cuda", gpu_decode=True)
    assert len(cpu) == len(gpu)
    for (a, labels_a, _), (b, labels_b, _) in zip(cpu, gpu, strict=True):
        assert torch.equal(labels_a, labels_b.cpu())
        torch.testing.assert_close(b.cpu(), a, rtol=0, atol=1e-3)


@pytest.mark.parametrize("train, ten_crop", [(True, False), (False, False), (False, True)])
def test_compiled_and_whole_batch_arithmetic_give_the_same_values(source, train, ten_crop):
    """The CPU's compiled loop over each crop (views of the mean and its mirror) against the
    whole-batch torch steps (one gather), where the loop can be built."""
    if not build_kernels(required=False):
        pytest.skip("no C compiler here")
    recipe = DataRecipe(image_size=SIZE, crop_size=CROP, input_scale="standardised")
    items = CropItems(source, recipe, train=train, ten_crop=ten_crop)
    loader = make_loader(items, 8, train=train, workers=0, seed=2, collate=collate_crops)
    crops, _, _ = next(iter(loader))
    stats = random_stats()
    each, whole = (
        BatchTransform(recipe, stats, "cpu", lighting=train, native_kernels=native)(crops)
        for native in (True, False)
    )
    assert torch.equal(each, whole)


@pytest.mark.parametrize("ten_crop", [False, True])
def test_crops_keep_the_decoders_pixel_order_and_the_arithmetic_does_not_depend_on_it(
    source, ten_crop
):
    """Crops are (c, c, 3) in memory, as decoders write pixels, both where loader processes
    stack them and where threads cut a store's into reused buffers; the float images keep that
    order, and a contiguous copy of the same crops gives the same values."""
    recipe = DataRecipe(image_size=SIZE, crop_size=CROP, input_scale="standardised")
    items = CropItems(source, recipe, train=not ten_crop, ten_crop=ten_crop)
    loader = make_loader(items, 8, train=not ten_crop, workers=0, collate=collate_crops)
    crops, _, _ = next(iter(loader))
    assert crops.pixels.movedim(-3, -1).is_contiguous()
    transform = BatchTransform(recipe, random_stats(), "cpu", lighting=not ten_crop)
    images = transform(crops)
    assert images.movedim(-3, -1).is_contiguous()
    contiguous = crops._replace(pixels=crops.pixels.contiguous())
    assert torch.equal(transform(contiguous), images)
