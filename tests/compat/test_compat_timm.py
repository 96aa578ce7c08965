"""cutmix.compat.timm: timm's Mixup and FastCollateMixup, checked without timm (CI cannot import it beside
our torch): its signature as written in timm 1.0.31's source, each mode's structure, the targets rebuilt
here from the drawn parameters by timm's formulas, the probabilities by counting over fixed seeds.
benchmarks/compat_peers.py compares against the real timm."""

from __future__ import annotations

import inspect
import math
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch.utils.data import DataLoader, Dataset

from cutmix.compat.timm import FastCollateMixup, Mixup
from cutmix.errors import UsageError

K = 10


def images(batch: int = 8, size: int = 16, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Distinct random pixels, so that every output pixel tells which sample it came from."""
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)).to(dtype)


def labels(batch: int = 8) -> torch.Tensor:
    return torch.arange(batch) % K


def smoothed(ids: torch.Tensor, smoothing: float) -> torch.Tensor:
    """timm's one_hot(on = 1 - s + s/K, off = s/K), written out."""
    off = smoothing / K
    rows = [[1.0 - smoothing + off if k == int(i) else off for k in range(K)] for i in ids]
    return torch.tensor(rows, dtype=torch.float64)


def expected_targets(ids: torch.Tensor, weight: torch.Tensor, smoothing: float) -> torch.Tensor:
    y = smoothed(ids, smoothing)
    w = weight.double()[:, None]
    return y * w + y.flip(0) * (1 - w)


def box_mask(box, size: int) -> torch.Tensor:
    y0, y1, x0, x1 = (int(v) for v in box)
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def check_pixels(x: torch.Tensor, out: torch.Tensor, params) -> None:
    """Each sample: its own pixels outside its box and its partner's (B - 1 - i) inside for CutMix,
    λ·x + (1 - λ)·partner for MixUp, itself where not mixed."""
    batch, size = x.shape[0], x.shape[-1]
    for i in range(out.shape[0]):
        partner = x[batch - 1 - i]
        lam = float(params.lam[i])
        if params.use_cutmix[i]:
            mask = box_mask(params.box[i], size)
            expected = torch.where(mask, partner, x[i])
            assert torch.equal(out[i], expected)
        elif lam != 1.0:
            torch.testing.assert_close(out[i], x[i] * lam + partner * (1 - lam), rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(out[i], x[i])


def pasted_share(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The share of each sample's own pixels, counted (independent of the drawn box)."""
    return (out == x).all(dim=1).flatten(1).double().mean(dim=1)


# ----------------------------------------------------------------------------------------------
# The signature: timm 1.0.31's, as its source reads
# ----------------------------------------------------------------------------------------------

TIMM_SIGNATURE = [
    ("mixup_alpha", 1.0), ("cutmix_alpha", 0.0), ("cutmix_minmax", None), ("prob", 1.0),
    ("switch_prob", 0.5), ("mode", "batch"), ("correct_lam", True), ("label_smoothing", 0.1),
    ("num_classes", 1000), ("multi_label", False),
]  # fmt: skip


def test_constructor_is_timms_with_its_defaults_and_two_keywords_beyond():
    parameters = list(inspect.signature(Mixup).parameters.values())
    positional = [(p.name, p.default) for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == TIMM_SIGNATURE
    assert [p.name for p in parameters if p.kind is p.KEYWORD_ONLY] == ["generator", "seed"]
    mixup = Mixup()
    assert (mixup.mixup_alpha, mixup.cutmix_alpha, mixup.mix_prob, mixup.prob) == (1.0, 0.0, 1.0, 1.0)
    assert mixup.mixup_enabled is True and mixup.mode == "batch" and mixup.num_classes == 1000
    assert list(inspect.signature(FastCollateMixup).parameters) == list(inspect.signature(Mixup).parameters)


def test_positional_arguments_land_where_timms_do():
    mixup = Mixup(0.8, 1.0, None, 0.5, 0.25, "elem", False, 0.2, 7, False)
    assert (mixup.mixup_alpha, mixup.cutmix_alpha, mixup.cutmix_minmax) == (0.8, 1.0, None)
    assert (mixup.prob, mixup.switch_prob, mixup.mode, mixup.correct_lam) == (0.5, 0.25, "elem", False)
    assert (mixup.label_smoothing, mixup.num_classes, mixup.multi_label) == (0.2, 7, False)


# ----------------------------------------------------------------------------------------------
# Each mode's structure
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cutmix", [False, True])
def test_batch_mode_one_lam_one_box_and_the_flipped_partner(cutmix):
    x, y = images(), labels()
    mixup = Mixup(mixup_alpha=0.0 if cutmix else 1.0, cutmix_alpha=1.0 if cutmix else 0.0,
                  num_classes=K, seed=3)  # fmt: skip
    for _ in range(5):
        out, targets, params = mixup(x, y, return_params=True)
        assert torch.unique(params.lam).numel() == 1 and bool(params.mixed.all())
        assert bool((params.use_cutmix == cutmix).all())
        assert torch.equal(params.partner, torch.arange(7, -1, -1))
        if cutmix:
            assert bool((params.box == params.box[0]).all())
        check_pixels(x, out, params)
        torch.testing.assert_close(targets.double(), expected_targets(y, params.weight, 0.1))


@pytest.mark.parametrize("kind", ["cutmix", "mixup"])
def test_pair_mode_shares_lam_and_box_between_i_and_its_mirror_both_ways(kind):
    x, y = images(batch=10), labels(10)
    mixup = Mixup(mixup_alpha=1.0 if kind == "mixup" else 0.0, cutmix_alpha=1.0 if kind == "cutmix" else 0.0,
                  mode="pair", num_classes=K, seed=4)  # fmt: skip
    out, targets, params = mixup(x, y, return_params=True)
    assert torch.equal(params.lam, params.lam.flip(0)) and torch.equal(params.box, params.box.flip(0))
    assert torch.unique(params.lam).numel() == 5  # one λ per pair, five pairs
    check_pixels(x, out, params)
    if kind == "cutmix":  # pasted both ways: i holds j's box and j holds i's
        for i in range(5):
            mask = box_mask(params.box[i], 16)
            assert torch.equal(out[i][:, mask], x[9 - i][:, mask])
            assert torch.equal(out[9 - i][:, mask], x[i][:, mask])
    torch.testing.assert_close(targets.double(), expected_targets(y, params.weight, 0.1))


def test_elem_mode_draws_lam_and_the_cutmix_or_mixup_choice_per_sample():
    x, y = images(batch=64), labels(64)
    mixup = Mixup(mixup_alpha=1.0, cutmix_alpha=1.0, mode="elem", num_classes=K, seed=5)
    out, targets, params = mixup(x, y, return_params=True)
    assert torch.unique(params.lam).numel() == 64
    kinds = params.use_cutmix[params.mixed]
    assert 10 < int(kinds.sum()) < 54  # both kinds in one batch (switch_prob 0.5: 32 ± 4)
    assert not torch.equal(params.lam, params.lam.flip(0))
    check_pixels(x, out, params)
    torch.testing.assert_close(targets.double(), expected_targets(y, params.weight, 0.1))


def test_targets_rebuilt_from_labels_by_timms_formula_when_nothing_is_mixed():
    y = torch.tensor([3, 0, 9, 9])
    for smoothing in (0.0, 0.1, 0.3):
        mixup = Mixup(prob=0.0, label_smoothing=smoothing, num_classes=K, seed=0)
        out, targets = mixup(images(4), y)
        off = smoothing / K
        assert targets.dtype == torch.float32 and targets.shape == (4, K)
        assert math.isclose(float(targets[0, 3]), 1 - smoothing + off, rel_tol=1e-6)
        assert math.isclose(float(targets[0, 4]), off, abs_tol=1e-7)
        torch.testing.assert_close(targets.double(), smoothed(y, smoothing))
        assert torch.equal(out, images(4))


def test_labels_as_b_by_1_ids_and_as_probabilities():
    x = images(4)
    mixup = Mixup(num_classes=K, seed=1)
    ids = torch.tensor([1, 2, 3, 4])
    a = mixup(x, ids, return_params=True)
    mixup = Mixup(num_classes=K, seed=1)
    b = mixup(x, ids[:, None].to(torch.int32))
    torch.testing.assert_close(a[1], b[1])
    probs = torch.nn.functional.one_hot(ids, K).float()
    c = Mixup(num_classes=K, seed=1)(x, probs)
    torch.testing.assert_close(a[1], c[1])


def test_multi_label_targets_smooth_towards_one_half():
    dense = (torch.rand(6, K, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    mixup = Mixup(num_classes=K, multi_label=True, label_smoothing=0.2, seed=2)
    _, targets, params = mixup(images(6), dense, return_params=True)
    y = dense.double() * 0.8 + 0.1
    w = params.weight.double()[:, None]
    torch.testing.assert_close(targets.double(), y * w + y.flip(0) * (1 - w))
    with pytest.raises(UsageError, match=r"target: expected multi-label \(6, 10\), got \(6,\)"):
        mixup(images(6), torch.arange(6))


# ----------------------------------------------------------------------------------------------
# Boxes and λ: correct_lam, cutmix_minmax, timm's box rule
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_correct_lam_true_weights_by_the_pasted_share_and_false_by_the_drawn_lam(mode):
    x, y = images(batch=16, size=12), labels(16)
    clipped = 0
    for seed in range(12):
        exact = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, mode=mode, num_classes=K, seed=seed)
        out, _, params = exact(x, y, return_params=True)
        share = pasted_share(x, out)
        torch.testing.assert_close(params.weight, share, rtol=0, atol=1e-12)
        drawn = Mixup(
            mixup_alpha=0.0, cutmix_alpha=1.0, mode=mode, correct_lam=False, num_classes=K, seed=seed
        )
        out2, targets2, params2 = drawn(x, y, return_params=True)
        assert torch.equal(out2, out)  # the same draws, only the weight differs
        assert torch.equal(params2.weight, params2.lam)
        torch.testing.assert_close(targets2.double(), expected_targets(y, params2.lam, 0.1))
        clipped += int((share - params2.lam).abs().gt(0.02).sum())
    assert clipped > 0  # the drawn λ is inexact: boxes clipped at the border, sides truncated


def test_box_rule_is_timms_int_size_sqrt_one_minus_lam_around_a_centre():
    size = 20
    mixup = Mixup(mixup_alpha=0.0, cutmix_alpha=1.0, mode="elem", num_classes=K, seed=7)
    unclipped = 0
    for _ in range(20):
        params = mixup.sample(32, size, size)
        for lam, (y0, y1, x0, x1) in zip(params.lam.tolist(), params.box.tolist(), strict=True):
            cut = int(size * np.sqrt(np.float32(1.0) - np.float32(lam)))
            assert 0 <= y0 <= y1 <= size and 0 <= x0 <= x1 <= size
            assert y1 - y0 <= cut and x1 - x0 <= cut
            if y0 > 0 and y1 < size:
                assert y1 - y0 == cut  # centre - cut // 2 to centre + (cut + 1) // 2
                unclipped += 1
    assert unclipped > 50


def test_cutmix_minmax_draws_box_sides_in_range_inside_the_image_and_always_weights_exactly():
    mixup = Mixup(mixup_alpha=0.0, cutmix_alpha=0.3, cutmix_minmax=(0.2, 0.6), mode="elem",
                  correct_lam=False, num_classes=K, seed=8)  # fmt: skip
    assert mixup.cutmix_alpha == 1.0  # forced, as timm
    x, y = images(batch=32, size=20), labels(32)
    heights = set()
    for _ in range(10):
        out, _, params = mixup(x, y, return_params=True)
        box = params.box[params.use_cutmix]
        h, w = box[:, 1] - box[:, 0], box[:, 3] - box[:, 2]
        assert bool(((h >= 4) & (h < 12) & (w >= 4) & (w < 12)).all())  # [int(20·0.2), int(20·0.6))
        assert bool(((box >= 0) & (box <= 20)).all())
        heights |= set(h.tolist())
        torch.testing.assert_close(params.weight, pasted_share(x, out), rtol=0, atol=1e-12)
    assert heights == set(range(4, 12))
    with pytest.raises(UsageError, match=r"cutmix_minmax: expected a range that holds a box side for 1x1"):
        mixup(images(2, size=1), labels(2))


def test_setting_cutmix_minmax_later_forces_cutmix_alpha_as_the_constructor():
    mixup = Mixup(cutmix_alpha=0.0, num_classes=K)
    mixup.cutmix_minmax = [0.3, 0.8]
    assert mixup.cutmix_minmax == (0.3, 0.8) and mixup.cutmix_alpha == 1.0


@pytest.mark.parametrize(("mode", "alpha"), [("elem", 0.4), ("pair", 1.0), ("batch", 2.0)])
def test_lam_follows_beta_alpha_alpha(mode, alpha):
    mixup = Mixup(mixup_alpha=alpha, mode=mode, num_classes=K, seed=9)
    draws = np.concatenate([mixup.sample(32, 8, 8).lam.numpy()[: 1 if mode == "batch" else 16]
                            for _ in range(1000 if mode == "batch" else 60)])  # fmt: skip
    assert stats.kstest(draws, stats.beta(alpha, alpha).cdf).pvalue > 1e-3
    wrong = 1.0 if alpha != 1.0 else 3.0  # the test has the power to see another α
    assert stats.kstest(draws, stats.beta(wrong, wrong).cdf).pvalue < 1e-3


# ----------------------------------------------------------------------------------------------
# prob and switch_prob per mode, counted over fixed seeds (±5 standard deviations)
# ----------------------------------------------------------------------------------------------


def within(count: int, total: int, p: float) -> bool:
    return abs(count - total * p) <= 5 * math.sqrt(total * p * (1 - p))


def test_batch_mode_prob_is_per_batch_and_switch_prob_picks_cutmix_per_batch():
    mixup = Mixup(mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.3, switch_prob=0.8, num_classes=K, seed=10)
    mixed = cutmix = 0
    for _ in range(600):
        params = mixup.sample(8, 8, 8)
        assert bool((params.mixed == params.mixed[0]).all())  # all or none
        assert bool((params.use_cutmix == params.use_cutmix[0]).all())
        mixed += int(params.mixed[0])
        cutmix += int(params.use_cutmix[0])
    assert within(mixed, 600, 0.3) and within(cutmix, mixed, 0.8)


@pytest.mark.parametrize("mode", ["pair", "elem"])
def test_pair_and_elem_modes_draw_prob_and_switch_prob_per_pair_or_sample(mode):
    mixup = Mixup(mixup_alpha=1.0, cutmix_alpha=1.0, prob=0.3, switch_prob=0.8, mode=mode, num_classes=K,
                  seed=11)  # fmt: skip
    draws = 32 if mode == "elem" else 16
    mixed = cutmix = partly = 0
    for _ in range(100):
        params = mixup.sample(32, 8, 8)
        own = params.mixed[:draws]
        mixed += int(own.sum())
        cutmix += int(params.use_cutmix[:draws].sum())
        partly += 0 < int(own.sum()) < draws
        if mode == "pair":
            assert torch.equal(params.mixed, params.mixed.flip(0))
    assert within(mixed, 100 * draws, 0.3) and within(cutmix, mixed, 0.8)
    assert partly > 90  # per pair or sample, not per batch


# ----------------------------------------------------------------------------------------------
# mixup_enabled, attributes, errors, reproducibility, inputs
# ----------------------------------------------------------------------------------------------


def test_mixup_enabled_false_takes_effect_on_the_next_call_and_true_again_mixes():
    x, y = images(), labels()
    for mode in ("batch", "pair", "elem"):
        mixup = Mixup(mixup_alpha=1.0, cutmix_alpha=1.0, mode=mode, num_classes=K, seed=12)
        out, _ = mixup(x, y)
        assert not torch.equal(out, x)
        mixup.mixup_enabled = False
        out, targets = mixup(x, y)
        assert torch.equal(out, x)
        torch.testing.assert_close(targets.double(), smoothed(y, 0.1))
        mixup.mixup_enabled = True
        assert not torch.equal(mixup(x, y)[0], x)


def test_attributes_set_later_take_effect_on_the_next_call():
    x, y = images(batch=16), labels(16)
    mixup = Mixup(num_classes=K, seed=13)
    mixup.mode = "elem"
    assert torch.unique(mixup(x, y, return_params=True)[2].lam).numel() == 16
    mixup.prob = 0.0
    assert mixup.mix_prob == 0.0 and torch.equal(mixup(x, y)[0], x)
    mixup.mix_prob, mixup.mixup_alpha, mixup.cutmix_alpha = 1.0, 0.0, 1.0
    assert bool(mixup(x, y, return_params=True)[2].use_cutmix.all())
    mixup.label_smoothing, mixup.prob = 0.0, 0.0
    assert float(mixup(x, y)[1].max()) == 1.0


BAD = [
    ("mixup_alpha", -1.0, "a finite number >= 0"), ("cutmix_alpha", math.inf, "a finite number >= 0"),
    ("mixup_alpha", "1", "a finite number >= 0"), ("cutmix_minmax", (0.5,), "None or a pair"),
    ("cutmix_minmax", (0.6, 0.2), "None or a pair"), ("prob", 5.0, "a probability in"),
    ("switch_prob", -0.1, "a probability in"), ("mode", "element", "one of 'batch', 'pair', 'elem'"),
    ("correct_lam", 1, "True or False"), ("label_smoothing", 1.0, r"a number in \[0, 1\)"),
    ("num_classes", 0, "an int >= 1"), ("num_classes", 2.0, "an int >= 1"), ("multi_label", None, "True or False"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "value", "expected"), BAD)
def test_bad_values_are_refused_by_the_constructor_and_by_setting_them_later(name, value, expected):
    shown = name
    with pytest.raises(UsageError, match=rf"^{shown}: expected {expected}.*, got "):
        Mixup(**{name: value})
    mixup = Mixup(num_classes=K)
    before = getattr(mixup, name)
    with pytest.raises(UsageError, match=rf"^{shown}: expected {expected}.*, got "):
        setattr(mixup, name, value)
    assert getattr(mixup, name) == before
    with pytest.raises(UsageError, match="mixup_enabled: expected True or False, got 0"):
        mixup.mixup_enabled = 0


def test_mixing_with_neither_alpha_is_refused_and_a_usage_error_is_a_value_error():
    with pytest.raises(UsageError, match="mixup_alpha, cutmix_alpha: expected at least one > 0"):
        Mixup(mixup_alpha=0.0)
    assert issubclass(UsageError, ValueError)
    mixup = Mixup(mixup_alpha=0.0, prob=0.0, num_classes=K)  # nothing to mix: allowed, as timm
    assert torch.equal(mixup(images(), labels())[0], images())
    mixup.prob = 1.0
    with pytest.raises(UsageError, match="expected at least one > 0"):
        mixup(images(), labels())


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_odd_batch_sizes_are_refused_as_timm_refuses_them(batch):
    with pytest.raises(UsageError, match=f"x: expected an even batch size >= 2 .*, got {batch}"):
        Mixup(num_classes=K)(images(batch), labels(batch))


@pytest.mark.parametrize(
    ("x", "target", "message"),
    [
        ([1.0], labels(), "x: expected a torch.Tensor"),
        (torch.rand(8, 3, 4), labels(), r"x: expected a 4-D tensor \(B, C, H, W\), got shape \(8, 3, 4\)"),
        (
            torch.zeros(8, 3, 4, 4, dtype=torch.int32),
            labels(),
            "x: expected a floating-point or uint8 tensor",
        ),
        (images(), labels().float(), r"target: expected 8 int class ids \(B,\) or \(B, 1\)"),
        (images(), labels(6), r"target: expected 8 int class ids"),
        (images(), labels() + K, r"target: expected class ids in \[0, 10\)"),
        (images(), [0] * 8, "target: expected a torch.Tensor, got list"),
    ],
)
def test_bad_inputs_name_the_argument(x, target, message):
    with pytest.raises(UsageError, match=message):
        Mixup(num_classes=K, seed=0)(x, target)


def test_bad_generator_and_seed():
    with pytest.raises(UsageError, match="seed: expected an int >= 0 or None, got -1"):
        Mixup(seed=-1)
    with pytest.raises(UsageError, match="seed: expected None when a generator is given"):
        Mixup(seed=1, generator=torch.Generator())
    with pytest.raises(UsageError, match="generator: expected a CPU torch.Generator or None, got int"):
        Mixup(generator=3)


def test_a_seed_or_a_generator_reproduces_every_call_and_other_seeds_differ():
    x, y = images(), labels()
    runs = []
    for make in (lambda: Mixup(0.8, 1.0, mode="elem", num_classes=K, seed=21),
                 lambda: Mixup(0.8, 1.0, mode="elem", num_classes=K, generator=torch.Generator().manual_seed(21))):  # fmt: skip
        mixup = make()
        runs.append([mixup(x, y) for _ in range(3)])
    for (a, ta), (b, tb) in zip(*runs, strict=True):
        assert torch.equal(a, b) and torch.equal(ta, tb)
    other = Mixup(0.8, 1.0, mode="elem", num_classes=K, seed=22)(x, y)[0]
    assert not torch.equal(other, runs[0][0][0])


def test_default_generator_follows_torch_manual_seed_and_leaves_numpy_global_rng_alone():
    x, y = images(), labels()
    np.random.seed(0)
    numpy_state = np.random.get_state()[1].copy()
    torch.manual_seed(5)
    a = Mixup(mode="elem", num_classes=K)(x, y)[0]
    torch.manual_seed(5)
    b = Mixup(mode="elem", num_classes=K)(x, y)[0]
    assert torch.equal(a, b)
    assert np.array_equal(np.random.get_state()[1], numpy_state)


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_the_callers_tensors_are_not_modified(mode):
    x, y = images(), labels()
    x_copy, y_copy = x.clone(), y.clone()
    out, _ = Mixup(1.0, 1.0, mode=mode, num_classes=K, seed=14)(x, y)
    assert torch.equal(x, x_copy) and torch.equal(y, y_copy) and out.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.uint8])
@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_dtypes_are_kept_cutmix_is_exact_and_mixup_close(dtype, mode):
    x = (images() * 255).to(dtype) if dtype == torch.uint8 else images(dtype=dtype)
    for cutmix in (0.0, 1.0):
        mixup = Mixup(mixup_alpha=1.0 - cutmix, cutmix_alpha=cutmix, mode=mode, num_classes=K, seed=15)
        out, targets, params = mixup(x, labels(), return_params=True)
        assert out.dtype == dtype and targets.dtype == torch.float32
        if cutmix:
            check_pixels(x, out, params)
        else:
            lam = params.lam.view(-1, 1, 1, 1)
            expected = x.double() * lam + x.flip(0).double() * (1 - lam)
            tolerance = 0.51 if dtype == torch.uint8 else 1e-2
            assert float((out.double() - expected).abs().max()) <= tolerance


def test_channels_last_and_gradients_flow():
    x = images().to(memory_format=torch.channels_last).requires_grad_(True)
    out, _ = Mixup(1.0, 1.0, mode="elem", num_classes=K, seed=16)(x, labels())
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_a_pickled_mixup_continues_the_stream_exactly():
    x, y = images(), labels()
    mixup = Mixup(1.0, 1.0, mode="elem", num_classes=K, seed=17)
    mixup(x, y)
    copy = pickle.loads(pickle.dumps(mixup))
    for _ in range(3):
        assert torch.equal(mixup(x, y)[0], copy(x, y)[0])


@settings(max_examples=25, deadline=None)
@given(
    half_batch=st.integers(1, 6), size=st.integers(1, 9), mode=st.sampled_from(["batch", "pair", "elem"]),
    mixup_alpha=st.sampled_from([0.0, 0.2, 1.0]), prob=st.sampled_from([0.0, 0.5, 1.0]),
    correct_lam=st.booleans(), smoothing=st.sampled_from([0.0, 0.1]), seed=st.integers(0, 2**32),
)  # fmt: skip
def test_every_output_is_timms_mix_of_the_drawn_parameters(
    half_batch, size, mode, mixup_alpha, prob, correct_lam, smoothing, seed
):
    batch = 2 * half_batch
    x, y = images(batch, size, seed % 1000), labels(batch)
    mixup = Mixup(mixup_alpha, 1.0, None, prob, 0.5, mode, correct_lam, smoothing, K, seed=seed)
    out, targets, params = mixup(x, y, return_params=True)
    check_pixels(x, out, params)
    torch.testing.assert_close(targets.double(), expected_targets(y, params.weight, smoothing))
    torch.testing.assert_close(targets.sum(1), torch.ones(batch))
    cut = params.use_cutmix
    if correct_lam:
        torch.testing.assert_close(params.weight[cut], pasted_share(x, out)[cut], rtol=0, atol=1e-12)
    if mode == "pair":
        assert torch.equal(params.lam, params.lam.flip(0)) and torch.equal(params.box, params.box.flip(0))


# ----------------------------------------------------------------------------------------------
# The collate form (timm's FastCollateMixup)
# ----------------------------------------------------------------------------------------------


def uint8_samples(count: int = 8, size: int = 8, numpy: bool = False) -> list:
    pixels = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))  # fmt: skip
    return [(p.numpy() if numpy else p, i % K) for i, p in enumerate(pixels)]


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("numpy", [False, True])
def test_collate_returns_uint8_images_and_float32_targets_as_timm(mode, numpy):
    batch = uint8_samples(numpy=numpy)
    kept = [torch.as_tensor(b[0]).clone() for b in batch]
    collate = FastCollateMixup(mixup_alpha=1.0, cutmix_alpha=1.0, mode=mode, num_classes=K, seed=18)
    out, targets, params = collate(batch, return_params=True)
    assert out.dtype == torch.uint8 and out.shape == (8, 3, 8, 8) and targets.dtype == torch.float32
    x = torch.stack([torch.as_tensor(b[0]) for b in batch])
    assert all(torch.equal(torch.as_tensor(b[0]), k) for b, k in zip(batch, kept, strict=True))
    for i in range(8):
        lam = float(params.lam[i])
        if params.use_cutmix[i]:
            assert torch.equal(out[i], torch.where(box_mask(params.box[i], 8), x[7 - i], x[i]))
        else:  # rounded half to even, as timm's torch.round
            expected = torch.round(x[i].float() * lam + x[7 - i].float() * (1 - lam))
            assert float((out[i].float() - expected).abs().max()) <= 1.0
    torch.testing.assert_close(targets.double(), expected_targets(torch.arange(8) % K, params.weight, 0.1))


def test_collate_half_mode_mixes_the_first_half_with_the_second_and_returns_half():
    collate = FastCollateMixup(mixup_alpha=0.0, cutmix_alpha=1.0, mode="half", num_classes=K, seed=19)
    batch = uint8_samples()
    out, targets, params = collate(batch, return_params=True)
    assert out.shape == (4, 3, 8, 8) and targets.shape == (4, K)
    assert torch.equal(params.partner, torch.tensor([7, 6, 5, 4]))
    x = torch.stack([b[0] for b in batch])
    for i in range(4):
        assert torch.equal(out[i], torch.where(box_mask(params.box[i], 8), x[7 - i], x[i]))
    y = smoothed(torch.arange(8) % K, 0.1)
    w = params.weight.double()[:, None]
    torch.testing.assert_close(targets.double(), y[:4] * w + y.flip(0)[:4] * (1 - w))
    with pytest.raises(UsageError, match="mode: expected one of 'batch', 'pair', 'elem', got 'half'"):
        Mixup(mode="half")


def test_collate_refuses_bad_batches():
    collate = FastCollateMixup(num_classes=K, seed=0)
    with pytest.raises(
        UsageError, match="batch: expected uint8 .C, H, W. images of one shape, got torch.float32"
    ):
        collate([(torch.rand(3, 4, 4), 0), (torch.rand(3, 4, 4), 1)])
    with pytest.raises(UsageError, match="batch: expected a non-empty list"):
        collate([])
    with pytest.raises(UsageError, match="x: expected an even batch size"):
        collate(uint8_samples(3))


class TinyUint8(Dataset):
    """Eight uint8 images, importable by spawned workers (this module, by its unique basename)."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int):
        return torch.full((3, 6, 6), index * 30, dtype=torch.uint8), index % K


def test_collate_runs_in_a_spawned_dataloader_worker():
    collate = FastCollateMixup(mixup_alpha=1.0, cutmix_alpha=1.0, mode="elem", num_classes=K, seed=20)
    loader = DataLoader(TinyUint8(), batch_size=4, num_workers=1, collate_fn=collate,
                        multiprocessing_context="spawn", generator=torch.Generator().manual_seed(0))  # fmt: skip
    batches = list(loader)
    assert len(batches) == 2
    for out, targets in batches:
        assert out.dtype == torch.uint8 and out.shape == (4, 3, 6, 6) and targets.shape == (4, K)
        torch.testing.assert_close(targets.sum(1), torch.ones(4))
    assert not torch.equal(batches[0][0], torch.stack([TinyUint8()[i][0] for i in range(4)]))  # mixed
    # A seeded loader gives the worker the same stream again.
    again = list(DataLoader(TinyUint8(), batch_size=4, num_workers=1, collate_fn=collate,
                            multiprocessing_context="spawn", generator=torch.Generator().manual_seed(0)))  # fmt: skip
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # CI has the CPU only


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_images_on_a_device_give_targets_there_and_the_cpu_result(device, mode):
    x, y = images(), labels()
    on_cpu = Mixup(1.0, 1.0, mode=mode, num_classes=K, seed=23)(x, y)
    out, targets = Mixup(1.0, 1.0, mode=mode, num_classes=K, seed=23)(x.to(device), y.to(device))
    assert out.device.type == device and targets.device.type == device
    torch.testing.assert_close(out.cpu(), on_cpu[0])
    torch.testing.assert_close(targets.cpu(), on_cpu[1])
