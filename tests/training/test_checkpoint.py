"""Checkpoints from elsewhere: refused with the reason, never with advice to load them unsafely."""

from __future__ import annotations

import collections
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cutmix.cli import main
from cutmix.training.checkpoint import load_checkpoint
from cutmix.training.config import resolve_config
from cutmix.training.loop import train

# What torch appends to a weights-only failure: none of it may reach the user.
UNSAFE_ADVICE = ("weights_only", "will likely succeed", "safe_globals", "trusted source")


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["torch.save", "pickle.dumps", "zip of protocol 4"])
def test_hostile_checkpoint_is_refused_naming_the_global(tmp_path, capsys, how):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    payload = {"model": {"fc.weight": torch.zeros(2, 2)}, "extra": _RunsCode(str(marker))}
    if how == "torch.save":
        torch.save(payload, evil)  # the zip format torch writes
    elif how == "pickle.dumps":
        evil.write_bytes(pickle.dumps(payload))  # a bare pickle, protocol 5
    else:  # torch's zip layout around a pickle torch.save never writes (its own scan cannot read it)
        torch.save({"model": {}}, tmp_path / "good.pt")
        with zipfile.ZipFile(tmp_path / "good.pt") as good, zipfile.ZipFile(evil, "w") as out:
            for item in good.infolist():
                data = good.read(item.filename)
                out.writestr(
                    item, pickle.dumps(payload, protocol=4) if item.filename.endswith("data.pkl") else data
                )
    with pytest.raises(ValueError) as caught:
        load_checkpoint(evil)
    message = str(caught.value)
    assert message.startswith(f"{evil}: refused, not loaded: it holds objects a checkpoint must not contain")
    # posix.system on Linux (a bare pickle of a tensor names torch.storage._load_from_bytes too).
    assert f"{os.system.__module__}.system" in message.partition("(global")[2]
    assert not any(advice in message for advice in UNSAFE_ADVICE), message
    assert not marker.exists()

    assert main(["evaluate", "--checkpoint", str(evil), "--data", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert "must not contain" in err and f"{os.system.__module__}.system" in err
    assert not any(advice in err for advice in UNSAFE_ADVICE), err
    assert not marker.exists()


def test_harmless_but_unsupported_global_is_named(tmp_path):
    odd = tmp_path / "odd.pt"
    torch.save({"model": {}, "queue": collections.deque([1])}, odd)
    with pytest.raises(
        ValueError, match=r"odd.pt: refused, not loaded: .*\(global collections\.deque\)"
    ) as caught:
        load_checkpoint(odd)
    assert not any(advice in str(caught.value) for advice in UNSAFE_ADVICE)


def test_damaged_files_are_not_readable_checkpoints(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello world")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    good = tmp_path / "good.pt"
    torch.save({"model": {"w": torch.ones(3)}}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    for path in (text, empty, truncated, tmp_path / "missing.pt"):
        with pytest.raises(ValueError, match=rf"{path.name}: not a readable cutmix checkpoint") as caught:
            load_checkpoint(path)
        assert not any(advice in str(caught.value) for advice in UNSAFE_ADVICE)
    assert torch.equal(load_checkpoint(good)["model"]["w"], torch.ones(3))


# --------------------------------------------------------------------------------------------
# Class names: evaluate and predict score and name a checkpoint's outputs by the names it holds
# --------------------------------------------------------------------------------------------

CLASSES = ["ant", "bee", "cat"]


def _image_tree(root: Path, classes: list[str], train: int = 16, test: int = 8) -> Path:
    """Small 32x32 images whose colour depends on the class's position in ``CLASSES``."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        for name in classes:
            signal = 40 * np.eye(3, dtype=np.int64)[CLASSES.index(name) % 3] if name in CLASSES else 0
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 200, (32, 32, 3)) + signal
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def tree_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("classes")
    tree = _image_tree(tmp / "tree", CLASSES)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CUTMIX_DATA_DIR", str(tmp / "cache"))
        config = resolve_config("seed", data=str(tree), depth=8, epochs=1, batch_size=16, device="cpu")
        train(config, tmp / "run", progress=False)
    return tmp, tree, tmp / "run" / "checkpoint.pt"


def _evaluate(capsys, checkpoint: Path, data: Path) -> tuple[int, dict | None, str, str]:
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--device", "cpu",
                 "--quiet", "--json"])  # fmt: skip
    out, err = capsys.readouterr()
    return code, (json.loads(out.strip().splitlines()[-1]) if code == 0 else None), out, err


def test_evaluate_maps_the_same_classes_in_another_order_by_name(tree_run, tmp_path, capsys, monkeypatch):
    tmp, tree, checkpoint_path = tree_run
    monkeypatch.setenv("CUTMIX_DATA_DIR", str(tmp / "cache"))
    code, baseline, _, _ = _evaluate(capsys, checkpoint_path, tree)
    assert code == 0 and set(baseline["per_class"]) == set(CLASSES)
    assert len(set(baseline["per_class"].values())) > 1  # else a permutation could not show

    # The same model with its outputs in another order, as if trained on a set listing its classes
    # as cat, ant, bee: the tree (folders sorted ant, bee, cat) must be scored by name.
    checkpoint = load_checkpoint(checkpoint_path)
    order = ["cat", "ant", "bee"]
    rows = torch.tensor([CLASSES.index(name) for name in order])
    checkpoint["model"]["fc.weight"] = checkpoint["model"]["fc.weight"][rows]
    checkpoint["model"]["fc.bias"] = checkpoint["model"]["fc.bias"][rows]
    checkpoint["classes"] = order
    torch.save(checkpoint, tmp_path / "reordered.pt")
    code, reordered, out, _ = _evaluate(capsys, tmp_path / "reordered.pt", tree)
    assert code == 0
    assert reordered["per_class"] == pytest.approx(baseline["per_class"])
    assert reordered["test_acc"] == pytest.approx(baseline["test_acc"])
    assert "mapped by name" in out


def test_evaluate_refuses_other_class_names_showing_both(tree_run, tmp_path, capsys, monkeypatch):
    tmp, _, checkpoint_path = tree_run
    monkeypatch.setenv("CUTMIX_DATA_DIR", str(tmp_path / "cache"))
    other = _image_tree(tmp_path / "other", ["ant", "bee", "dog"])
    code, _, _, err = _evaluate(capsys, checkpoint_path, other)
    assert code == 2
    assert "expected ['ant', 'bee', 'cat'], got ['ant', 'bee', 'dog']" in err


def test_evaluate_of_an_older_checkpoint_without_class_names(tree_run, tmp_path, capsys, monkeypatch):
    tmp, tree, checkpoint_path = tree_run
    monkeypatch.setenv("CUTMIX_DATA_DIR", str(tmp / "cache"))
    code, baseline, _, _ = _evaluate(capsys, checkpoint_path, tree)
    older = load_checkpoint(checkpoint_path)
    del older["classes"]
    torch.save(older, tmp_path / "older.pt")
    code, result, _, _ = _evaluate(capsys, tmp_path / "older.pt", tree)
    assert code == 0 and result == baseline  # still works, trusting the folder order

    four = _image_tree(tmp_path / "four", ["ant", "bee", "cat", "dog"])
    code, _, _, err = _evaluate(capsys, tmp_path / "older.pt", four)
    assert code == 2 and "expected 3 classes (the checkpoint's outputs), got 4" in err


def test_predict_refuses_class_names_that_are_not_the_checkpoints(tree_run, tmp_path, capsys):
    _, _, checkpoint_path = tree_run
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((40, 30, 3), dtype=np.uint8)).save(image)
    predict = ["predict", "--checkpoint", str(checkpoint_path), "--top-k", "1", str(image)]
    assert main([*predict, "--classes", "cat,ant,bee"]) == 2
    assert "expected the checkpoint's classes ['ant', 'bee', 'cat'], got ['cat', 'ant', 'bee']" in (
        capsys.readouterr().err
    )
    assert main([*predict, "--classes", "ant,bee,cat"]) == 0
    assert capsys.readouterr().out.startswith(f"{image}: ")

    older = load_checkpoint(checkpoint_path)
    del older["classes"]
    torch.save(older, tmp_path / "older.pt")
    assert main(["predict", "--checkpoint", str(tmp_path / "older.pt"), "--classes", "a,b", str(image)]) == 2
    assert "expected 3 names (the checkpoint's outputs), got 2" in capsys.readouterr().err


@pytest.mark.parametrize("top_k", ["0", "-2"])
def test_predict_refuses_a_top_k_below_one(tree_run, tmp_path, capsys, top_k):
    _, _, checkpoint_path = tree_run
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)
    assert main(["predict", "--checkpoint", str(checkpoint_path), "--top-k", top_k, str(image)]) == 2
    assert f"--top-k: expected a positive number of classes to show, got {top_k}" in capsys.readouterr().err


def test_predict_refuses_empty_class_names(tree_run, tmp_path, capsys):
    _, _, checkpoint_path = tree_run
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)
    assert main(["predict", "--checkpoint", str(checkpoint_path), "--classes", "ant,,cat", str(image)]) == 2
    assert "--classes: expected comma-separated non-empty names, got 'ant,,cat'" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["unknown config field", "weights of another model"])
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_a_checkpoint_this_version_cannot_load_is_one_line(tree_run, tmp_path, capsys, damage, command):
    tmp, tree, checkpoint_path = tree_run
    checkpoint = load_checkpoint(checkpoint_path)
    if damage == "unknown config field":
        checkpoint["config"]["from_a_newer_version"] = 1
    else:
        checkpoint["model"] = {"fc.weight": torch.zeros(3, 7), "other.weight": torch.zeros(2)}
    torch.save(checkpoint, tmp_path / "odd.pt")
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)
    rest = ["--data", str(tree), "--device", "cpu", "--quiet"] if command == "evaluate" else [str(image)]
    assert main([command, "--checkpoint", str(tmp_path / "odd.pt"), *rest]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'odd.pt'} holds a config or weights this version cannot load" in err
    assert "Traceback" not in err


def test_evaluate_and_predict_read_the_checkpoint_once(tree_run, tmp_path, capsys, monkeypatch):
    import cutmix.training.evaluate as evaluate

    tmp, tree, checkpoint_path = tree_run
    monkeypatch.setenv("CUTMIX_DATA_DIR", str(tmp / "cache"))
    reads = []
    monkeypatch.setattr(evaluate, "load_checkpoint", lambda path: reads.append(path) or load_checkpoint(path))
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)
    assert main(["evaluate", "--checkpoint", str(checkpoint_path), "--data", str(tree), "--quiet"]) == 0
    assert (
        main(["predict", "--checkpoint", str(checkpoint_path), "--classes", "ant,bee,cat", str(image)]) == 0
    )
    assert main(["predict", "--checkpoint", str(checkpoint_path), str(image)]) == 0
    assert reads == [str(checkpoint_path)] * 3


def test_predict_of_an_older_checkpoint_whose_data_set_no_longer_fits_its_outputs(tree_run, tmp_path, capsys):
    _, _, checkpoint_path = tree_run
    older = load_checkpoint(checkpoint_path)
    del older["classes"]
    older["config"]["data"] = str(_image_tree(tmp_path / "four", ["ant", "bee", "cat", "dog"]))
    torch.save(older, tmp_path / "older.pt")
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)
    assert main(["predict", "--checkpoint", str(tmp_path / "older.pt"), str(image)]) == 2
    assert "has 4 classes for 3 outputs; name them with --classes" in capsys.readouterr().err


def test_predict_reads_sixteen_bit_images_as_their_high_bytes(tree_run, tmp_path, capsys):
    """16-bit grey images (PNG: mode I;16, TIFF: I;16B or I) answer as the 8-bit image of their high
    bytes does, not as a white image (what Pillow's convert("RGB") makes of them)."""
    _, _, checkpoint = tree_run
    grey = np.random.default_rng(5).integers(0, 256, (32, 32), dtype=np.uint8)
    sixteen = grey.astype(np.uint16) * 257  # v * 257 = (v << 8) | v: its high byte is v
    paths = {
        name: tmp_path / name
        for name in ("grey8.png", "grey16.png", "grey16b.tif", "grey32.tif", "white.png")
    }
    Image.fromarray(grey).save(paths["grey8.png"])
    Image.fromarray(sixteen).save(paths["grey16.png"])
    Image.frombytes("I;16B", (32, 32), sixteen.astype(">u2").tobytes()).save(paths["grey16b.tif"])
    Image.fromarray(sixteen.astype(np.int32)).save(paths["grey32.tif"])
    Image.new("L", (32, 32), 255).save(paths["white.png"])
    with Image.open(paths["grey16.png"]) as image:
        assert image.mode == "I;16"
    assert main(["predict", "--checkpoint", str(checkpoint), "--top-k", "3", *map(str, paths.values())]) == 0
    answers = [line.split(": ", 1)[1] for line in capsys.readouterr().out.strip().splitlines()]
    assert answers[1:4] == [answers[0]] * 3
    assert answers[4] != answers[0]  # the check can tell the image from a white one


# --------------------------------------------------------------------------------------------
# The library functions: cutmix.load_model, cutmix.evaluate_checkpoint, cutmix.predict_files
# --------------------------------------------------------------------------------------------


def test_load_model_returns_the_model_its_config_and_class_names(tree_run):
    import cutmix
    from cutmix.errors import UsageError

    _, tree, checkpoint_path = tree_run
    loaded = cutmix.load_model(checkpoint_path)
    assert isinstance(loaded, cutmix.LoadedCheckpoint)
    assert loaded.classes == CLASSES and loaded.config.data == str(tree) and loaded.config.depth == 8
    assert not loaded.model.training and next(loaded.model.parameters()).device.type in ("cpu", "cuda")
    assert cutmix.load_model(str(checkpoint_path), "cpu").model.fc.out_features == 3
    with pytest.raises(UsageError, match="--device"):
        cutmix.load_model(checkpoint_path, "cuda:99" if torch.cuda.is_available() else "cuda")


def test_load_model_refuses_what_is_not_a_checkpoint(tmp_path):
    import cutmix
    from cutmix.errors import DataError

    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="is not a cutmix checkpoint"):
        cutmix.load_model(tmp_path / "other.pt")


def test_evaluate_checkpoint_agrees_with_the_cli(tree_run, capsys, monkeypatch):
    import cutmix

    tmp, tree, checkpoint_path = tree_run
    monkeypatch.setenv("CUTMIX_DATA_DIR", str(tmp / "cache"))
    result = cutmix.evaluate_checkpoint(checkpoint_path, str(tree), device="cpu")
    assert isinstance(result, cutmix.Evaluation)
    assert list(result.per_class) == CLASSES and not result.remapped and result.data == str(tree)
    code, printed, out, _ = _evaluate(capsys, checkpoint_path, tree)
    assert code == 0
    assert printed == {"test_acc": result.accuracy, "per_class": result.per_class}  # exactly
    assert f"test accuracy: {result.accuracy:.2%}  loss {result.loss:.4f}" in out
    # None: the data set it was trained on, on the GPU where there is one.
    assert cutmix.evaluate_checkpoint(checkpoint_path).accuracy == pytest.approx(result.accuracy)
    flipped = cutmix.evaluate_checkpoint(checkpoint_path, str(tree), device="cpu", tta_flip=True)
    assert flipped.tta_flip and set(flipped.per_class) == set(CLASSES)


def test_predict_files_agrees_with_the_cli(tree_run, tmp_path, capsys):
    import cutmix
    from cutmix.errors import DataError, UsageError

    _, _, checkpoint_path = tree_run
    rng = np.random.default_rng(1)
    files = []
    for i, shape in enumerate([(32, 32, 3), (40, 30, 3), (16, 16, 3)]):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(files[-1])
    predictions = cutmix.predict_files(checkpoint_path, files, top_k=2)
    assert [p.file for p in predictions] == list(map(str, files))
    for prediction in predictions:
        assert len(prediction.top) == 2 and {name for name, _ in prediction.top} <= set(CLASSES)
        assert prediction.top[0][1] >= prediction.top[1][1] > 0
    assert main(["predict", "--checkpoint", str(checkpoint_path), "--top-k", "2", *map(str, files)]) == 0
    expected = [f"{p.file}: " + ", ".join(f"{n} {q:.1%}" for n, q in p.top) for p in predictions]
    assert capsys.readouterr().out.splitlines() == expected
    # All the classes at most; names as a list or comma-separated, checked as the CLI checks them.
    assert len(cutmix.predict_files(checkpoint_path, files[:1], top_k=10)[0].top) == 3
    assert cutmix.predict_files(checkpoint_path, files[:1], top_k=2, classes=CLASSES) == predictions[:1]
    with pytest.raises(UsageError, match="expected the checkpoint's classes"):
        cutmix.predict_files(checkpoint_path, files, classes="cat,ant,bee")
    with pytest.raises(UsageError, match="--top-k"):
        cutmix.predict_files(checkpoint_path, files, top_k=0)
    (tmp_path / "not.png").write_text("not an image")
    with pytest.raises(DataError, match="not a readable image"):
        cutmix.predict_files(checkpoint_path, [tmp_path / "not.png"])


def test_load_model_reads_an_exported_safetensors_file_as_its_checkpoint(
    tree_run, tmp_path, capsys, monkeypatch
):
    """A ``model.safetensors`` written from a checkpoint's weights, config and class names loads as the
    checkpoint does: the same config and names, the same weights tensor for tensor, the same outputs,
    predictions and evaluation (library and CLI), and the same refusals."""
    pytest.importorskip("safetensors")
    import cutmix
    from cutmix.errors import DataError
    from cutmix.weights import write_model_file

    tmp, tree, checkpoint_path = tree_run
    monkeypatch.setenv("CUTMIX_DATA_DIR", str(tmp / "cache"))
    saved = load_checkpoint(checkpoint_path)
    exported = tmp_path / "model.safetensors"
    write_model_file(exported, saved["model"], saved["config"], saved["classes"])

    from_checkpoint, from_file = cutmix.load_model(checkpoint_path, "cpu"), cutmix.load_model(exported, "cpu")
    assert from_file.config == from_checkpoint.config and from_file.config.data == str(tree)
    assert from_file.classes == from_checkpoint.classes == CLASSES and not from_file.model.training
    expected_state = from_checkpoint.model.state_dict()
    assert from_file.model.state_dict().keys() == expected_state.keys()
    for name, tensor in from_file.model.state_dict().items():
        assert torch.equal(tensor, expected_state[name]), name
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(from_file.model(images), from_checkpoint.model(images))

    rng = np.random.default_rng(2)
    files = []
    for i, shape in enumerate([(32, 32, 3), (48, 20, 3)]):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(files[-1])
    assert cutmix.predict_files(exported, files, top_k=3) == cutmix.predict_files(
        checkpoint_path, files, top_k=3
    )
    by_file = cutmix.evaluate_checkpoint(exported, str(tree), device="cpu")
    assert by_file == cutmix.evaluate_checkpoint(checkpoint_path, str(tree), device="cpu")
    code_file, printed_file, _, _ = _evaluate(capsys, exported, tree)
    code_checkpoint, printed_checkpoint, _, _ = _evaluate(capsys, checkpoint_path, tree)
    assert code_file == code_checkpoint == 0 and printed_file == printed_checkpoint

    # The same refusals: weights of another model, another version's config, a foreign file.
    wrong_weights = tmp_path / "wrong-weights.safetensors"
    write_model_file(wrong_weights, {"fc.weight": torch.zeros(3, 4)}, saved["config"], CLASSES)
    wrong_config = tmp_path / "wrong-config.safetensors"
    write_model_file(wrong_config, saved["model"], {**saved["config"], "no_such_field": 1}, CLASSES)
    for path in (wrong_weights, wrong_config):
        with pytest.raises(DataError, match="holds a config or weights this version cannot load"):
            cutmix.load_model(path, "cpu")
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, str(foreign))
    with pytest.raises(DataError, match="expected a cutmix model file"):
        cutmix.load_model(foreign, "cpu")
    assert main(["evaluate", "--checkpoint", str(foreign), "--data", str(tree), "--quiet"]) == 2
    assert "expected a cutmix model file" in capsys.readouterr().err
