"""evaluate_robustness on a tiny trained checkpoint, each number against an independent computation:
the model run directly, image by image where it matters."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassCalibrationError

import cutmix
from cutmix.data import load_dataset, stratified_split
from cutmix.errors import DataError, UsageError
from cutmix.robustness import CORRUPTIONS, evaluate_robustness
from cutmix.robustness.corruptions import generator_for

LIMIT, SEED, BATCH = 60, 3, 25  # three batches, the last one short
SIZES = [str(s) for s in range(0, 33, 4)]


@pytest.fixture(scope="module")
def suite(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("robustness")
    result = evaluate_robustness(
        tiny_checkpoint, "synthetic", limit=LIMIT, seed=SEED, batch_size=BATCH, device="cpu", out=out
    )
    return result, out


@pytest.fixture(scope="module")
def direct(tiny_checkpoint):
    """The same images, labels and model, found without the suite: (model, x in [0, 1], labels, fill)."""
    loaded = cutmix.load_model(tiny_checkpoint, "cpu")
    assert not loaded.config.normalize  # the seed recipe feeds x / 255
    dataset = load_dataset("synthetic", progress=False)
    assert loaded.classes == list(dataset.classes)
    _, kept = stratified_split(dataset.test_labels, LIMIT, seed=SEED)
    kept = np.sort(kept)
    x = torch.from_numpy(dataset.test_images[kept]).permute(0, 3, 1, 2).float() / 255.0
    fill = dataset.train_images.astype(np.float64).mean(axis=(0, 1, 2)) / 255.0
    return loaded.model, x, torch.from_numpy(dataset.test_labels[kept]), fill


def _accuracy(model, x, labels) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == labels).double().mean().item()


def test_keys_files_and_wording(suite):
    result, out = suite
    assert {"clean", "occlusion", "fgsm", "ood", "corruptions", "n_images", "checkpoint"} <= set(result)
    assert set(result["clean"]) == {"acc", "nll", "brier", "ece"}
    assert set(result["occlusion"]) == {"center", "boundary", "center_mean", "boundary_mean", "mean"}
    assert list(result["occlusion"]["center"]) == SIZES and list(result["occlusion"]["boundary"]) == SIZES
    assert list(result["fgsm"]) == ["0", "1", "2", "4", "8"]
    assert set(result["ood"]) == {"uniform", "gaussian"}
    assert all(set(v) == {"auroc", "tnr_at_tpr95"} for v in result["ood"].values())
    assert list(result["corruptions"]) == [*CORRUPTIONS, "mean"]
    assert all(list(result["corruptions"][n]) == ["1", "2", "3", "4", "5"] for n in CORRUPTIONS)
    assert result["n_images"] == LIMIT and {"command", "versions", "hardware", "git_commit"} <= set(result)
    assert result["settings"]["tta_flip"] is False
    assert result["settings"]["corruptions"] == "CIFAR-10-C-style (generated)"
    on_disk = json.loads((out / "robustness.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    for name in ("robustness.png", "cam.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    md = (out / "robustness.md").read_text()
    assert "CIFAR-10-C-style" in md and "no flip test-time augmentation" in md
    assert not [p for p in os.listdir(out) if p.startswith(".")]  # no temporary file left


def test_clean_metrics_against_the_model_run_directly(suite, direct):
    result, _ = suite
    model, x, labels, _ = direct
    with torch.no_grad():
        logits = model(x).double()
    probs = logits.softmax(1)
    clean = result["clean"]
    assert clean["acc"] == pytest.approx((logits.argmax(1) == labels).double().mean().item(), abs=1e-12)
    assert clean["nll"] == pytest.approx(-probs[torch.arange(LIMIT), labels].log().mean().item(), rel=1e-5)
    brier = (probs - F.one_hot(labels, 10)).pow(2).sum(1).mean().item()
    assert clean["brier"] == pytest.approx(brier, rel=1e-5)
    ece = MulticlassCalibrationError(num_classes=10, n_bins=15, norm="l1")(probs, labels).item()
    assert clean["ece"] == pytest.approx(ece, abs=1e-5)
    assert 0.2 < clean["acc"] < 1.0  # a model that learned something, and not everything


def test_no_occlusion_and_no_attack_equal_clean_accuracy(suite):
    result, _ = suite
    acc = result["clean"]["acc"]
    occlusion = result["occlusion"]
    assert (
        occlusion["center"]["0"] == acc and occlusion["boundary"]["32"] == acc and result["fgsm"]["0"] == acc
    )
    assert occlusion["center_mean"] == pytest.approx(np.mean(list(occlusion["center"].values())))
    assert occlusion["mean"] == pytest.approx((occlusion["center_mean"] + occlusion["boundary_mean"]) / 2)


def test_a_fully_occluded_set_scores_one_constant_prediction(suite, direct):
    result, _ = suite
    model, _, labels, fill = direct
    constant = torch.tensor(fill, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    with torch.no_grad():
        predicted = model(constant).argmax(1).item()
    expected = (labels == predicted).double().mean().item()
    assert result["occlusion"]["center"]["32"] == pytest.approx(expected)
    assert result["occlusion"]["boundary"]["0"] == pytest.approx(expected)


def test_occlusion_against_masks_drawn_image_by_image(suite, direct):
    result, _ = suite
    model, x, labels, fill = direct
    for s in (8, 16):
        centre, boundary = x.clone(), x.clone()
        lo = (32 - s) // 2
        for i in range(len(x)):  # the reference: plain slicing per image
            for c in range(3):
                centre[i, c, lo : lo + s, lo : lo + s] = fill[c]
                inner = x[i, c, lo : lo + s, lo : lo + s].clone()
                boundary[i, c] = fill[c]
                boundary[i, c, lo : lo + s, lo : lo + s] = inner
        assert result["occlusion"]["center"][str(s)] == pytest.approx(_accuracy(model, centre, labels))
        assert result["occlusion"]["boundary"][str(s)] == pytest.approx(_accuracy(model, boundary, labels))


def test_fgsm_against_a_per_image_gradient(suite, direct):
    result, _ = suite
    model, x, labels, _ = direct
    steps = []
    for i in range(len(x)):  # each image's own loss and gradient
        pixel = x[i : i + 1].clone().requires_grad_(True)
        F.cross_entropy(model(pixel), labels[i : i + 1]).backward()
        steps.append(pixel.grad.sign())
    sign = torch.cat(steps)
    for eps in (2, 8):
        attacked = (x + sign * eps / 255).clamp(0, 1)
        assert result["fgsm"][str(eps)] == pytest.approx(_accuracy(model, attacked, labels))
    assert result["fgsm"]["8"] < result["fgsm"]["0"]


def test_a_corruption_against_the_formula_per_image(suite, direct):
    result, _ = suite
    model, x, labels, _ = direct
    for severity, c in ((1, 0.75), (5, 0.15)):
        contrasted = torch.stack(
            [((im - im.mean((1, 2), keepdim=True)) * c + im.mean((1, 2), keepdim=True)) for im in x]
        )
        expected = _accuracy(model, contrasted.clamp(0, 1), labels)
        assert result["corruptions"]["contrast"][str(severity)] == pytest.approx(expected)
    every = [a for n in CORRUPTIONS for a in result["corruptions"][n].values()]
    assert result["corruptions"]["mean"] == pytest.approx(np.mean(every))


def test_ood_against_the_noise_scored_directly(suite, direct):
    # The documented draws: noise image i uniform from generator_for(seed, 1, 0, i), Gaussian from
    # generator_for(seed, 1, 1, i); scored here by the model and a pairwise count.
    result, _ = suite
    model, x, _, _ = direct
    with torch.no_grad():
        positive = model(x).double().softmax(1).amax(1).numpy()
        uniform = [torch.rand((1, 3, 32, 32), generator=generator_for(SEED, 1, 0, i)) for i in range(LIMIT)]
        gaussian = [
            (0.5 + torch.randn((1, 3, 32, 32), generator=generator_for(SEED, 1, 1, i))).clamp(0, 1)
            for i in range(LIMIT)
        ]
    for name, noise in (("uniform", uniform), ("gaussian", gaussian)):
        with torch.no_grad():
            negative = model(torch.cat(noise)).double().softmax(1).amax(1).numpy()
        assert len(negative) == LIMIT  # as many noise images as test images
        pairs = (positive[:, None] > negative[None, :]).mean() + 0.5 * (
            positive[:, None] == negative[None, :]
        ).mean()
        assert result["ood"][name]["auroc"] == pytest.approx(pairs, abs=1e-9)
        threshold = max(t for t in positive if (positive >= t).mean() >= 0.95)
        assert result["ood"][name]["tnr_at_tpr95"] == pytest.approx((negative < threshold).mean())


def test_the_result_does_not_depend_on_the_batch_size(suite, tiny_checkpoint):
    result, _ = suite  # BATCH = 25: batches of 25, 25 and 10
    other = evaluate_robustness(tiny_checkpoint, "synthetic", limit=LIMIT, seed=SEED, batch_size=LIMIT,
                                corruptions=["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"],
                                device="cpu")  # fmt: skip
    for name in ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"):
        assert other["corruptions"][name] == result["corruptions"][name], name
    # The noise images are the same; their scores may differ in the last bits across batch sizes.
    for noise in ("uniform", "gaussian"):
        assert other["ood"][noise]["auroc"] == pytest.approx(result["ood"][noise]["auroc"], abs=1e-6)


def test_ood_scores_test_and_noise_images_at_one_precision():
    from types import SimpleNamespace

    from cutmix.robustness import suite as suite_module

    # A confident model: its float32 softmax is exactly 1.0 at both margins; only float64 ranks the
    # test images (margin 20) above the noise images (margin 18), as a max-softmax detector should.
    test_logits, noise_logits = torch.tensor([[20.0, 0.0]] * 2), torch.tensor([[18.0, 0.0]] * 2)
    assert (noise_logits.softmax(1).amax(1) == 1.0).all()
    tally = suite_module.Tally(
        logits=[test_logits], ood={"uniform": [noise_logits], "gaussian": [noise_logits]}
    )
    keys = [f"occlusion/{p}/{s}" for p in suite_module.PROTOCOLS for s in suite_module.OCCLUSION_SIZES]
    keys += [f"fgsm/{eps}" for eps in suite_module.FGSM_EPS] + [
        f"corruption/contrast/{v}" for v in range(1, 6)
    ]
    tally.correct = dict.fromkeys(keys, 2)
    prep = SimpleNamespace(labels=torch.tensor([0, 0]), names=("contrast",))
    summary = suite_module._summary(prep, tally)
    assert summary["ood"]["uniform"] == {"auroc": 1.0, "tnr_at_tpr95": 1.0}


def test_the_subset_is_class_stratified(suite, direct):
    result, _ = suite
    _, _, labels, _ = direct
    assert result["n_images"] == LIMIT
    assert (
        torch.bincount(labels, minlength=10).tolist() == [LIMIT // 10] * 10
    )  # the synthetic set is balanced


def test_deterministic_for_a_seed_and_seed_dependent(tiny_checkpoint):
    kwargs = dict(limit=40, batch_size=20, corruptions=["gaussian_noise", "impulse_noise"], device="cpu")
    keys = ("clean", "occlusion", "fgsm", "ood", "corruptions", "reliability")
    first = evaluate_robustness(tiny_checkpoint, "synthetic", seed=1, **kwargs)
    again = evaluate_robustness(tiny_checkpoint, "synthetic", seed=1, **kwargs)
    other = evaluate_robustness(tiny_checkpoint, "synthetic", seed=2, **kwargs)
    assert {k: first[k] for k in keys} == {k: again[k] for k in keys}
    assert first["ood"] != other["ood"]
    assert list(first["corruptions"]) == ["gaussian_noise", "impulse_noise", "mean"]


def test_the_released_cifar10c_files_are_used_and_said_to_be(tiny_checkpoint, tmp_path, direct):
    dataset = load_dataset("synthetic", progress=False)
    n = len(dataset.test_labels)
    # A fake release: "contrast" whose severities 1..5 are the clean images, then fully grey ones.
    grey = np.full_like(dataset.test_images, 128)
    np.save(tmp_path / "contrast.npy", np.concatenate([dataset.test_images] * 4 + [grey]))
    np.save(tmp_path / "labels.npy", np.tile(dataset.test_labels.astype(np.uint8), 5))
    out = tmp_path / "out"
    result = evaluate_robustness(tiny_checkpoint, "synthetic", limit=LIMIT, seed=SEED, batch_size=BATCH,
                                 corruptions=str(tmp_path), device="cpu", out=out)  # fmt: skip
    assert list(result["corruptions"]) == ["contrast", "mean"]
    assert [result["corruptions"]["contrast"][str(v)] for v in range(1, 5)] == [result["clean"]["acc"]] * 4
    model, _, labels, _ = direct
    with torch.no_grad():
        predicted = model(torch.full((1, 3, 32, 32), 128 / 255)).argmax(1).item()
    assert result["corruptions"]["contrast"]["5"] == pytest.approx(
        (labels == predicted).double().mean().item()
    )
    assert result["settings"]["corruptions"] == "released CIFAR-10-C files"
    assert "released CIFAR-10-C files" in (out / "robustness.md").read_text()
    assert n == 500


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("true",))


def _bad_inputs(tiny_checkpoint: Path, tmp: Path) -> list[tuple[dict, type, str]]:
    renamed = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    renamed["classes"] = [f"class{i}" for i in range(10)]
    torch.save(renamed, tmp / "renamed.pt")
    torch.save({"model": {}, "x": _RunsCode()}, tmp / "evil.pt")
    (tmp / "a-file").write_text("not a folder")
    good = {"checkpoint": tiny_checkpoint, "data": "synthetic", "limit": 10}
    return [
        ({**good, "checkpoint": tmp / "missing.pt"}, DataError, "--checkpoint: "),
        ({**good, "checkpoint": tmp / "evil.pt"}, DataError, "--checkpoint: "),
        ({**good, "checkpoint": tmp / "renamed.pt"}, DataError, "--data: synthetic holds other classes"),
        ({**good, "limit": 0}, UsageError, "--limit: expected a positive number of test images, got 0"),
        ({**good, "limit": -5}, UsageError, "--limit: expected a positive number of test images, got -5"),
        ({**good, "limit": 2.5}, UsageError, "--limit: expected a positive number of test images, got 2.5"),
        ({**good, "limit": 501}, UsageError, "--limit: expected at most the 500 test images, got 501"),
        ({**good, "corruptions": "fog"}, UsageError, "--corruptions: expected names among gaussian_noise"),
        ({**good, "corruptions": ["contrast", "snow"]}, UsageError, "--corruptions: expected names among"),
        ({**good, "seed": -1}, UsageError, "--seed: expected an integer >= 0, got -1"),
        ({**good, "batch_size": 0}, UsageError, "--batch-size: expected a positive number of images, got 0"),
        ({**good, "out": tmp / "a-file"}, UsageError, "--out: expected a folder for the robustness files"),
        ({**good, "data": str(tmp / "nowhere")}, DataError, "--data: expected a dataset name"),
    ]


def test_every_bad_input_is_one_line_naming_the_argument(tiny_checkpoint, tmp_path):
    for kwargs, error, start in _bad_inputs(tiny_checkpoint, tmp_path):
        checkpoint = kwargs.pop("checkpoint")
        with pytest.raises(error) as caught:
            evaluate_robustness(checkpoint, device="cpu", **kwargs)
        message = str(caught.value)
        assert message.startswith(start), (kwargs, message)
        assert "\n" not in message, message
    assert "must not contain" in str(
        pytest.raises(DataError, evaluate_robustness, tmp_path / "evil.pt").value
    )
