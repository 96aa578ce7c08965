"""model.safetensors: the weights, config and class names round-trip; files that are not ours are
refused; a run's checkpoint exports to a small file that loads to the same model."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import cutmix
from cutmix.errors import DataError, UsageError
from cutmix.models import resnet_v1
from cutmix.weights import MODEL_FILE, export_checkpoint, read_model_file, write_model_file

CLASSES = ["ant", "bee", "cat"]
CONFIG = {"depth": 8, "data": "synthetic", "lr": 0.001, "init": None, "normalize": True}


def _model():
    return resnet_v1(8, 3, generator=torch.Generator().manual_seed(0))


def test_round_trip_of_tensors_config_and_classes(tmp_path):
    model = _model().to(memory_format=torch.channels_last)  # conv weights not contiguous
    state = model.state_dict()
    assert any(not t.is_contiguous() for t in state.values())
    before = {k: v.clone() for k, v in state.items()}
    path = tmp_path / "m.safetensors"
    write_model_file(path, state, CONFIG, CLASSES)
    tensors, config, classes = read_model_file(path)
    assert config == CONFIG and classes == CLASSES
    assert set(tensors) == set(state)
    for name, tensor in state.items():
        assert tensors[name].dtype == tensor.dtype and torch.equal(tensors[name], tensor), name
        assert torch.equal(tensor, before[name])  # the caller's tensors untouched
    assert tensors["stem.1.num_batches_tracked"].dtype == torch.int64
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left


def test_the_metadata_is_json_in_safetensors_strings(tmp_path):
    from safetensors import safe_open

    path = tmp_path / "m.safetensors"
    write_model_file(path, _model().state_dict(), CONFIG, CLASSES)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["cutmix"] == "1" and metadata["format"] == "pt"
    assert metadata["classes"] == '["ant", "bee", "cat"]'
    assert metadata["config"].startswith('{"data": "synthetic", "depth": 8')


def test_files_that_are_not_ours_are_refused(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign), metadata={"format": "pt"})
    with pytest.raises(DataError, match=r"expected a cutmix model file .* got a safetensors file without it"):
        read_model_file(foreign)
    text = tmp_path / "notes.safetensors"
    text.write_text("hello, not tensors")
    with pytest.raises(DataError, match="notes.safetensors: not a readable safetensors model file"):
        read_model_file(text)
    with pytest.raises(DataError, match="missing.safetensors: not a readable safetensors model file"):
        read_model_file(tmp_path / "missing.safetensors")
    odd = tmp_path / "odd.safetensors"
    save_file({"w": torch.zeros(2)}, str(odd), metadata={"cutmix": "1", "config": "{", "classes": "[]"})
    with pytest.raises(DataError, match="config or classes do not decode"):
        read_model_file(odd)


def test_export_of_a_run_checkpoint_loads_to_the_same_model(tiny_checkpoint, tmp_path):
    written = export_checkpoint(tiny_checkpoint, tmp_path / MODEL_FILE)
    loaded = cutmix.load_model(tiny_checkpoint, "cpu")
    tensors, config, classes = read_model_file(written)
    assert classes == loaded.classes and config == dataclasses.asdict(loaded.config)
    reference = loaded.model.state_dict()
    assert set(tensors) == set(reference)
    assert all(torch.equal(tensors[k], reference[k].cpu()) for k in reference)
    parameters = sum(t.numel() for t in tensors.values())
    assert parameters * 4 <= written.stat().st_size < parameters * 4 + 16_000  # float32 and a small header
    # Beside the checkpoint by default; exporting again replaces our own file.
    copy = tmp_path / "run"
    copy.mkdir()
    (copy / "checkpoint.pt").write_bytes(tiny_checkpoint.read_bytes())
    assert export_checkpoint(copy / "checkpoint.pt") == copy / MODEL_FILE
    assert export_checkpoint(copy / "checkpoint.pt") == copy / MODEL_FILE


def test_resnet20_file_is_about_one_megabyte(tmp_path):
    path = tmp_path / MODEL_FILE
    write_model_file(
        path, resnet_v1(20, 10, generator=torch.Generator().manual_seed(0)).state_dict(), {}, ["x"] * 10
    )
    assert 1.05e6 < path.stat().st_size < 1.15e6


def test_export_refuses_what_it_must_not_write_or_read(tiny_checkpoint, tmp_path):
    other = tmp_path / "mine.txt"
    other.write_text("my notes")
    with pytest.raises(UsageError, match="--out: .*mine.txt' exists and is not a cutmix model file"):
        export_checkpoint(tiny_checkpoint, other)
    assert other.read_text() == "my notes"
    with pytest.raises(UsageError, match="--out: expected a file name for the model, got the folder"):
        export_checkpoint(tiny_checkpoint, tmp_path)
    with pytest.raises(DataError, match="^--checkpoint: .*missing.pt: not a readable cutmix checkpoint"):
        export_checkpoint(tmp_path / "missing.pt", tmp_path / "m.safetensors")
    nameless = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    del nameless["classes"]
    torch.save(nameless, tmp_path / "old.pt")
    with pytest.raises(UsageError, match="--classes: .*old.pt holds no class names"):
        export_checkpoint(tmp_path / "old.pt", tmp_path / "m.safetensors")
    with pytest.raises(UsageError, match=r"--classes: expected 10 names \(the model's outputs\), got 2"):
        export_checkpoint(tmp_path / "old.pt", tmp_path / "m.safetensors", classes=["a", "b"])
    names = [f"c{i}" for i in range(10)]
    _, _, classes = read_model_file(
        export_checkpoint(tmp_path / "old.pt", tmp_path / "m.safetensors", classes=names)
    )
    assert classes == names


def test_the_robustness_suite_reads_an_exported_file_as_its_checkpoint(tiny_checkpoint, tmp_path):
    from cutmix.robustness import evaluate_robustness

    exported = export_checkpoint(tiny_checkpoint, tmp_path / MODEL_FILE)
    kwargs = dict(limit=20, corruptions=["contrast"], device="cpu")
    by_file = evaluate_robustness(exported, "synthetic", **kwargs)
    by_checkpoint = evaluate_robustness(tiny_checkpoint, "synthetic", **kwargs)
    keys = ("clean", "occlusion", "fgsm", "ood", "corruptions")
    assert {k: by_file[k] for k in keys} == {k: by_checkpoint[k] for k in keys}
    assert by_file["checkpoint"] == str(exported)


# --------------------------------------------------------------------------------------------
# The committed model files are the committed runs' models
# --------------------------------------------------------------------------------------------

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-jpeg"
COMMITTED_MODELS = sorted(RESULTS.glob("*/seed-*/*/model.safetensors"))


def test_every_committed_model_file_carries_its_runs_config():
    assert COMMITTED_MODELS, f"no model.safetensors under {RESULTS}"
    for path in COMMITTED_MODELS:
        _, config, classes = read_model_file(path)
        recorded = json.loads((path.parent / "config.json").read_text())["config"]
        assert config == recorded, path
        assert len(classes) == 10 and classes[0] == "airplane", path
        assert path.stat().st_size < 1_200_000, path


@pytest.mark.slow
@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"{REAL_DATA} not present")
def test_a_committed_model_file_reproduces_its_runs_test_accuracy(tmp_path, monkeypatch):
    monkeypatch.setenv("CUTMIX_DATA_DIR", str(tmp_path / "cache"))
    path = RESULTS / "fast-recipe" / "seed-0" / "cutmix" / MODEL_FILE
    summary = json.loads((path.parent / "summary.json").read_text())
    result = cutmix.evaluate_checkpoint(path, str(REAL_DATA), device="cpu")
    assert result.tta_flip == summary["tta_flip"]
    # The same weights and images; the sum over 10,000 images may differ in its last bits across
    # CPU kinds, so the count of correct images is compared, within one image.
    assert abs(result.accuracy - summary["test_acc"]) <= 1e-4 + 1e-12
