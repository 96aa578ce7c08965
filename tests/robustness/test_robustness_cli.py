"""`cutmix robustness` and `cutmix export` as a user types them, and the model file every finished
run now leaves beside its checkpoint."""

from __future__ import annotations

import contextlib
import io
import json

import torch

from cutmix.cli import main


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_a_finished_run_leaves_its_final_model_as_safetensors(tiny_checkpoint):
    import cutmix
    from cutmix.weights import read_model_file

    model_file = tiny_checkpoint.parent / "model.safetensors"
    state, config, classes = read_model_file(model_file)
    saved = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    assert state.keys() == saved["model"].keys()
    assert all(torch.equal(state[name], saved["model"][name]) for name in state)
    assert config == saved["config"] and classes == saved["classes"]
    summary = json.loads((tiny_checkpoint.parent / "summary.json").read_text())
    assert cutmix.evaluate_checkpoint(model_file, device="cpu").accuracy == summary["test_acc"]


def test_robustness_command_writes_what_the_library_returns(tiny_checkpoint, tmp_path):
    from cutmix.robustness import evaluate_robustness

    out = tmp_path / "rob"
    argv = ["robustness", "--checkpoint", str(tiny_checkpoint), "--limit", "20", "--seed", "3"]
    code, stdout, stderr = run_main(
        [*argv, "--corruptions", "contrast,jpeg_compression", "--quiet", "--out", str(out)]
    )
    assert code == 0, stderr
    written = json.loads((out / "robustness.json").read_text())
    assert {p.name for p in out.iterdir()} >= {"robustness.json", "robustness.md", "robustness.png"}
    direct = evaluate_robustness(
        tiny_checkpoint, limit=20, seed=3, corruptions="contrast,jpeg_compression", device="cpu"
    )
    for key in ("clean", "occlusion", "fgsm", "ood", "corruptions", "n_images"):
        assert written[key] == direct[key], key
    assert f"accuracy {direct['clean']['acc']:.2%}" in stdout and "no flip TTA" in stdout


def test_robustness_command_refuses_bad_input_in_one_line(tiny_checkpoint, tmp_path):
    for extra, named in (
        (["--limit", "0"], "--limit"),
        (["--corruptions", "fog"], "--corruptions"),
    ):
        argv = ["robustness", "--checkpoint", str(tiny_checkpoint), *extra, "--out", str(tmp_path / "r")]
        code, _, stderr = run_main(argv)
        assert code == 2 and stderr.count("\n") == 1 and named in stderr, stderr
    code, _, stderr = run_main(["robustness", "--checkpoint", str(tmp_path / "nope.pt"), "--out", "x"])
    assert code == 2 and stderr.count("\n") == 1 and "nope.pt" in stderr, stderr
    assert not (tmp_path / "r").exists()


def test_robustness_command_never_overwrites_a_users_files(tiny_checkpoint, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "robustness.md").write_text("my notes\n")
    argv = ["robustness", "--checkpoint", str(tiny_checkpoint), "--limit", "10", "--corruptions", "contrast"]
    code, _, stderr = run_main([*argv, "--quiet", "--out", str(out)])
    assert code == 2 and stderr.count("\n") == 1 and "robustness.md" in stderr, stderr
    assert (out / "robustness.md").read_text() == "my notes\n" and sorted(p.name for p in out.iterdir()) == [
        "robustness.md"
    ]
    again = tmp_path / "ours"  # the suite's own files are replaced by a new run of it
    assert run_main([*argv, "--quiet", "--out", str(again)])[0] == 0
    assert run_main([*argv, "--seed", "1", "--quiet", "--out", str(again)])[0] == 0
    assert '"seed": 1' in (again / "robustness.json").read_text()


def test_export_command_writes_a_model_that_loads_as_the_checkpoint(tiny_checkpoint, tmp_path):
    import cutmix

    target = tmp_path / "exported.safetensors"
    code, stdout, stderr = run_main(["export", "--checkpoint", str(tiny_checkpoint), "--out", str(target)])
    assert code == 0 and stdout.strip() == str(target), stderr
    images = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        expected = cutmix.load_model(tiny_checkpoint, "cpu").model(images)
        assert torch.equal(cutmix.load_model(target, "cpu").model(images), expected)
    code, _, stderr = run_main(["export", "--checkpoint", str(tmp_path / "missing.pt")])
    assert code == 2 and stderr.count("\n") == 1 and "missing.pt" in stderr, stderr


def test_a_run_never_replaces_a_model_file_it_did_not_write(tiny_checkpoint, tmp_path):
    import shutil

    import pytest

    from cutmix.errors import UsageError
    from cutmix.training.loop import check_out_dir

    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint.parent, run)
    check_out_dir(run)  # a run of ours, with its own model file: fine
    (run / "model.safetensors").write_bytes(b"someone else's weights")
    with pytest.raises(UsageError, match="model.safetensors.* is not a cutmix model file"):
        check_out_dir(run)
    check_out_dir(run, force=True)  # --force replaces, as it does config.json and the records
