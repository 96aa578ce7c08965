"""DeviceLoader and stratified_split: order, augmentation pixel by pixel, normalisation, DDP shards."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cutmix.data.loader import DeviceLoader, stratified_split


def encoded_images(n: int, h: int, w: int) -> np.ndarray:
    """uint8 (n, h, w, 3) whose pixel (i, r, c) is (i + 1, r + 1, c + 1): zero only in padding."""
    i, r, c = np.meshgrid(np.arange(n), np.arange(h), np.arange(w), indexing="ij")
    return np.stack([i + 1, r + 1, c + 1], axis=-1).astype(np.uint8)


def to_uint8_hwc(x: torch.Tensor) -> np.ndarray:
    """Loader output (B, C, H, W) in [0, 1] back to uint8 (B, H, W, C)."""
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def reference_crop_flip(src: np.ndarray, dy: int, dx: int, flip: bool, pad: int) -> np.ndarray:
    h, w = src.shape[:2]
    padded = np.pad(src, ((pad, pad), (pad, pad), (0, 0)))
    crop = padded[dy : dy + h, dx : dx + w]
    return crop[:, ::-1] if flip else crop


def recover_crop_flip(out: np.ndarray, src: np.ndarray, pad: int) -> tuple[int, int, bool]:
    """The unique (dy, dx, flip) whose reference equals ``out`` exactly; fails if none or several."""
    span = range(2 * pad + 1)
    hits = [
        (dy, dx, flip)
        for dy, dx, flip in itertools.product(span, span, (False, True))
        if np.array_equal(reference_crop_flip(src, dy, dx, flip, pad), out)
    ]
    assert len(hits) == 1, f"expected exactly one matching crop/flip, got {hits}"
    return hits[0]


def batches(loader: DeviceLoader) -> list[tuple[torch.Tensor, ...]]:
    return [tuple(t.clone() for t in batch) for batch in loader]


def same(a: list[tuple[torch.Tensor, ...]], b: list[tuple[torch.Tensor, ...]]) -> bool:
    return len(a) == len(b) and all(
        all(torch.equal(x, y) for x, y in zip(ba, bb, strict=True)) for ba, bb in zip(a, b, strict=True)
    )


@pytest.fixture
def small() -> tuple[np.ndarray, np.ndarray]:
    images = encoded_images(50, 6, 7)
    return images, np.arange(50) % 10


# ---------------------------------------------------------------------------- order


def test_same_seed_same_batches_other_seed_different(small):
    images, labels = small
    kw = dict(augment="crop-flip", pad=2, paired=True)
    a = batches(DeviceLoader(images, labels, 8, seed=3, **kw))
    b = batches(DeviceLoader(images, labels, 8, seed=3, **kw))
    c = batches(DeviceLoader(images, labels, 8, seed=4, **kw))
    assert same(a, b)
    assert not same(a, c)
    assert not torch.equal(a[0][1], c[0][1])  # the order itself differs, not just the crops


def test_set_epoch_is_resumable_and_epochs_differ(small):
    images, labels = small
    running = DeviceLoader(images, labels, 8, augment="crop-flip", pad=2, seed=1)
    assert running.epoch == 0
    epochs = [batches(running) for _ in range(3)]
    assert running.epoch == 3
    resumed = DeviceLoader(images, labels, 8, augment="crop-flip", pad=2, seed=1)
    resumed.set_epoch(2)
    assert same(batches(resumed), epochs[2])
    assert not same(epochs[0], epochs[1])
    running.set_epoch(0)
    assert same(batches(running), epochs[0])


def test_each_epoch_visits_every_sample_once():
    n, bs = 53, 8
    images = encoded_images(n, 4, 4)
    loader = DeviceLoader(images, np.arange(n), bs, drop_last=False, channels_last=False)
    assert len(loader) == 7
    for _ in range(2):
        seen = []
        sizes = []
        for x, y in loader:
            sizes.append(len(y))
            # The image must travel with its own label.
            np.testing.assert_array_equal(to_uint8_hwc(x), images[y.numpy()])
            seen.append(y)
        assert sizes == [8] * 6 + [5]
        assert sorted(torch.cat(seen).tolist()) == list(range(n))


def test_drop_last_gives_full_distinct_batches():
    loader = DeviceLoader(encoded_images(53, 4, 4), np.arange(53), 8)
    got = [y for _, y in loader]
    assert len(loader) == len(got) == 6
    assert all(len(y) == 8 for y in got)
    assert len(set(torch.cat(got).tolist())) == 48


def test_shuffle_mixes_classes_of_a_class_sorted_source():
    labels = np.repeat(np.arange(10), 40)  # sorted by class, like an image tree
    images = np.zeros((400, 2, 2, 3), np.uint8)
    _, y = next(iter(DeviceLoader(images, labels, 40)))
    assert len(torch.unique(y)) >= 6
    _, y = next(iter(DeviceLoader(images, labels, 40, shuffle=False)))
    assert torch.equal(y, torch.zeros(40, dtype=torch.int64))


# ---------------------------------------------------------------------------- augmentation


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("pad", [0, 2])
def test_crop_flip_pixel_by_pixel(channels_last, pad):
    n, h, w = 37, 5, 6
    images = encoded_images(n, h, w)
    loader = DeviceLoader(
        images,
        np.arange(n),
        8,
        augment="crop-flip",
        pad=pad,
        drop_last=False,
        channels_last=channels_last,
        paired=True,
        seed=7,
    )
    draws = []
    for _ in range(4):
        for x, y, x2, y2 in loader:
            assert x.is_contiguous(
                memory_format=torch.channels_last if channels_last else torch.contiguous_format
            )
            assert x.shape == (len(y), 3, h, w) and x.dtype == torch.float32
            for xs, ys in ((x, y), (x2, y2)):
                for out, label in zip(to_uint8_hwc(xs), ys.tolist(), strict=True):
                    draws.append(recover_crop_flip(out, images[label], pad))
    dys, dxs, flips = zip(*draws, strict=True)
    span = set(range(2 * pad + 1))
    assert set(dys) == span and set(dxs) == span
    assert 0.35 < np.mean(flips) < 0.65


def test_crop_flip_does_not_touch_the_input():
    images = encoded_images(20, 4, 4)
    before = images.copy()
    tensor = torch.from_numpy(images.copy())
    for src in (images, tensor):
        for _ in DeviceLoader(src, np.arange(20), 4, augment="crop-flip", pad=1):
            pass
    np.testing.assert_array_equal(images, before)
    np.testing.assert_array_equal(tensor.numpy(), before)


def test_numpy_and_tensor_inputs_agree(small):
    images, labels = small
    a = batches(DeviceLoader(images, labels, 8, augment="crop-flip", seed=2))
    b = batches(
        DeviceLoader(torch.from_numpy(images), torch.from_numpy(labels), 8, augment="crop-flip", seed=2)
    )
    assert same(a, b)


# ---------------------------------------------------------------------------- values


def test_scaling_without_stats_is_x_over_255():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 3, 5, 3), dtype=np.uint8)
    x, _ = next(iter(DeviceLoader(images, np.zeros(12, np.int64), 12, shuffle=False)))
    expected = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    assert torch.equal(x, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [True, False])
def test_normalisation_values(dtype, channels_last):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (9, 4, 3, 3), dtype=np.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    loader = DeviceLoader(
        images,
        np.zeros(9, np.int64),
        9,
        shuffle=False,
        mean=mean,
        std=std,
        dtype=dtype,
        channels_last=channels_last,
    )
    x, _ = next(iter(loader))
    assert x.dtype == dtype
    ref = (torch.from_numpy(images).double() / 255 - torch.tensor(mean, dtype=torch.float64)) / torch.tensor(
        std, dtype=torch.float64
    )
    torch.testing.assert_close(x.double(), ref.permute(0, 3, 1, 2), rtol=0, atol=1e-5)
    # Every channel of uint8 0 and 255 maps to its own ends, so the statistics are per channel.
    assert not torch.allclose(x[:, 0], x[:, 1])


def test_resize_is_bilinear_and_a_noop_at_the_stored_size():
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    labels = np.zeros(6, np.int64)
    x, _ = next(iter(DeviceLoader(images, labels, 6, shuffle=False, resize=(12, 10))))
    assert x.shape == (6, 3, 12, 10)
    src = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    ref = F.interpolate(src, size=(12, 10), mode="bilinear", align_corners=False) / 255
    torch.testing.assert_close(x, ref, rtol=0, atol=1e-6)
    same_size, _ = next(iter(DeviceLoader(images, labels, 6, shuffle=False, resize=(8, 8))))
    assert torch.equal(same_size, src / 255)


# ---------------------------------------------------------------------------- paired stream


def test_paired_stream_is_an_independent_full_pass(small):
    images, _ = small
    labels = np.arange(50)
    plain = batches(DeviceLoader(images, labels, 10, augment="crop-flip", seed=5))
    paired = batches(DeviceLoader(images, labels, 10, augment="crop-flip", seed=5, paired=True))
    # The first stream does not change when the second is switched on.
    assert same(plain, [b[:2] for b in paired])
    first = torch.cat([b[1] for b in paired])
    second = torch.cat([b[3] for b in paired])
    assert sorted(second.tolist()) == list(range(50))
    assert not torch.equal(first, second)
    # Positions agree only by chance (about 1 in 50 each).
    assert (first == second).sum() < 5


# ---------------------------------------------------------------------------- DDP


@pytest.mark.parametrize("n", [60, 61])
def test_ddp_shards_are_disjoint_and_cover_the_split(n):
    world, bs = 3, 4
    labels = np.arange(n)
    images = np.zeros((n, 2, 2, 3), np.uint8)
    per_rank = -(-n // world)
    shards = []
    for rank in range(world):
        loader = DeviceLoader(images, labels, bs, drop_last=False, rank=rank, world_size=world, seed=9)
        loader.set_epoch(4)
        got = torch.cat([y for _, y in loader]).tolist()
        assert len(loader) == -(-per_rank // bs)
        shards.append(got)
    assert len({len(s) for s in shards}) == 1
    union = [i for s in shards for i in s]
    assert set(union) == set(range(n))
    # Padding by wrap-around repeats exactly world * ceil(n / world) - n samples.
    assert len(union) - len(set(union)) == world * per_rank - n

    dropped = [
        torch.cat([y for _, y in DeviceLoader(images, labels, bs, rank=r, world_size=world, seed=9)]).tolist()
        for r in range(world)
    ]
    flat = [i for s in dropped for i in s]
    assert len(flat) == len(set(flat))
    assert len({len(s) for s in dropped}) == 1


def test_ddp_ranks_see_one_permutation():
    n = 24
    images = np.zeros((n, 2, 2, 3), np.uint8)
    whole = torch.cat([y for _, y in DeviceLoader(images, np.arange(n), n, seed=3)])
    ranks = [
        torch.cat([y for _, y in DeviceLoader(images, np.arange(n), 6, rank=r, world_size=2, seed=3)])
        for r in range(2)
    ]
    assert torch.equal(ranks[0], whole[0::2]) and torch.equal(ranks[1], whole[1::2])


# ---------------------------------------------------------------------------- stratified_split


def test_stratified_split_proportions_and_determinism():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    train, val = stratified_split(labels, 40, seed=0)
    assert train.dtype == val.dtype == np.int64
    assert np.bincount(labels[val]).tolist() == [20, 10, 6, 4]
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert np.intersect1d(train, val).size == 0 and train.size + val.size == labels.size
    again, val_again = stratified_split(labels, 40, seed=0)
    np.testing.assert_array_equal(val, val_again)
    np.testing.assert_array_equal(train, again)
    _, other = stratified_split(labels, 40, seed=1)
    assert not np.array_equal(val, other)


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 30), min_size=1, max_size=6),
    frac=st.floats(0, 0.999),
    seed=st.integers(0, 2**32),
)
def test_stratified_split_exact_total_and_near_proportional(counts, frac, seed):
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts))
    n_val = int(frac * labels.size)
    train, val = stratified_split(labels, n_val, seed=seed)
    assert val.size == n_val
    assert np.union1d(train, val).tolist() == list(range(labels.size))
    per_class = np.bincount(labels[val], minlength=len(counts))
    assert np.all(np.abs(per_class - n_val * np.array(counts) / labels.size) < 1)


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(images=np.zeros((4, 2, 2, 3), np.float32)), ValueError, "expected images as uint8"),
        (dict(images=np.zeros((4, 2, 2), np.uint8)), ValueError, r"expected images as uint8 \(N, H, W, C\)"),
        (dict(images=[[1]]), TypeError, "expected images as a numpy array or torch tensor, got list"),
        (dict(labels=np.zeros(3, np.int64)), ValueError, r"expected labels of shape \(4,\)"),
        (dict(labels=np.zeros(4, np.float32)), ValueError, "expected labels as integers"),
        (dict(batch_size=0), ValueError, "expected batch_size as a positive integer, got 0"),
        (dict(batch_size=5), ValueError, r"expected batch_size <= 4"),
        (dict(augment="flip"), ValueError, "expected augment in"),
        (dict(pad=-1), ValueError, "expected pad as an integer >= 0, got -1"),
        (dict(mean=[0.5] * 3), ValueError, "expected mean and std together"),
        (dict(mean=[0.5] * 2, std=[0.2] * 3), ValueError, "expected mean as 3 finite numbers"),
        (dict(mean=[0.5] * 3, std=[0.2, 0.0, 0.2]), ValueError, "expected std > 0"),
        (dict(dtype=torch.int32), ValueError, "expected dtype as a floating torch.dtype"),
        (dict(seed=-1), ValueError, "expected seed as an integer >= 0"),
        (dict(rank=2, world_size=2), ValueError, r"expected rank in \[0, 2\), got 2"),
        (dict(world_size=0), ValueError, "expected world_size as a positive integer"),
        (dict(resize=(0, 4)), ValueError, r"expected resize as \(H, W\) positive integers"),
    ],
)
def test_bad_inputs_raise(kwargs, error, match):
    args = dict(images=np.zeros((4, 2, 2, 3), np.uint8), labels=np.zeros(4, np.int64), batch_size=2)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        DeviceLoader(args.pop("images"), args.pop("labels"), args.pop("batch_size"), **args)


def test_bad_epoch_and_split_arguments_raise():
    loader = DeviceLoader(np.zeros((4, 2, 2, 3), np.uint8), np.zeros(4, np.int64), 2)
    with pytest.raises(ValueError, match="expected epoch as an integer >= 0, got -1"):
        loader.set_epoch(-1)
    with pytest.raises(ValueError, match=r"expected n_val as an integer in \[0, 4\)"):
        stratified_split(np.zeros(4, np.int64), 4, seed=0)
    with pytest.raises(ValueError, match="expected labels as integers"):
        stratified_split(np.zeros((2, 2), np.int64), 1, seed=0)
