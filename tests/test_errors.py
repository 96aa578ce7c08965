"""What the CLI does with an exception: one line for what a user got wrong, a traceback for a bug."""

from __future__ import annotations

import contextlib
import io

import pytest

from cutmix import errors
from cutmix.cli import demo, main
from cutmix.errors import DataError, UsageError


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def test_a_usage_error_is_one_line_with_exit_status_2(monkeypatch, tmp_path):
    def wrong(args):
        raise UsageError("--out: expected a folder, got 'x'")

    monkeypatch.setattr(demo, "run", wrong)
    code, _, stderr = run_main(["demo", "--out", str(tmp_path / "d.png")])
    assert (code, stderr) == (2, "cutmix demo: error: --out: expected a folder, got 'x'\n")
    assert issubclass(DataError, UsageError) and issubclass(UsageError, ValueError)


@pytest.mark.parametrize("exception", [ValueError("shapes (3,) and (4,) differ"), TypeError("bad operand")])
def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path, exception):
    def buggy(args):
        raise exception

    monkeypatch.setattr(demo, "run", buggy)
    # Not swallowed into "error: shapes differ": the exception (and so its traceback) reaches the caller.
    with pytest.raises(type(exception), match=str(exception).split(" ")[0]):
        main(["demo", "--out", str(tmp_path / "d.png")])


def test_a_bad_file_the_user_named_stays_a_one_line_error(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(b"not a tar archive")
    code, _, stderr = run_main(["train", "--data", str(archive), "--epochs", "1", "--device", "cpu", "--quiet",
                                "--out", str(tmp_path / "run")])  # fmt: skip
    # One line (tarfile's own reason spans several), naming the flag, without a traceback.
    assert code == 2 and "Traceback" not in stderr and stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"cutmix train: error: --data: {archive}: cannot read the tar archive")
    empty = tmp_path / "tree"
    (empty / "train").mkdir(parents=True)
    code, _, stderr = run_main(["preview", "--data", str(empty), "--out", str(tmp_path / "p.png")])
    assert code == 2 and "tree: missing test/" in stderr and len(stderr.splitlines()) == 1


@pytest.mark.parametrize("command", ["preview", "demo"])
def test_a_picture_out_that_is_a_folder_is_one_line_naming_out(tmp_path, command):
    folder = tmp_path / "pictures"
    folder.mkdir()
    argv = [command, "--out", str(folder)] + (["--data", "synthetic"] if command == "preview" else [])
    code, _, stderr = run_main(argv)
    assert (code, stderr) == (
        2,
        f"cutmix {command}: error: --out: expected a picture file name, got the folder {str(folder)!r}\n",
    )
    assert list(folder.iterdir()) == [] and list(tmp_path.iterdir()) == [folder]  # no .tmp left


def test_options_out_of_range_for_the_data_are_usage_errors(tmp_path):
    tiny = ["train", "--data", "synthetic:32", "--depth", "8", "--epochs", "1", "--device", "cpu", "--quiet"]
    code, _, stderr = run_main([*tiny, "--val", "32", "--out", str(tmp_path / "a")])
    assert code == 2 and "--val: expected fewer than the 32 training images, got 32" in stderr
    code, _, stderr = run_main([*tiny, "--batch-size", "64", "--out", str(tmp_path / "b")])
    assert code == 2 and "--batch-size: expected at most the 32 training images, got 64" in stderr


@pytest.mark.parametrize("spec", ["synthetic:0", "synthetic-seg:x", "no/such/folder"])
def test_a_bad_data_spec_is_a_one_line_error(tmp_path, spec):
    code, _, stderr = run_main(["preview", "--data", spec, "--out", str(tmp_path / "p.png")])
    assert code == 2 and len(stderr.splitlines()) == 1 and spec in stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # The ResNet is the CIFAR model: a 64x64 data set is refused up front, not deep in the model.
        (
            ["train", "--data", "synthetic-seg:64", "--epochs", "1", "--device", "cpu", "--quiet"],
            "--data: expected 32x32 images for the CIFAR ResNet, got 64x64: synthetic-seg:64",
        ),
        (
            ["preview", "--data", "synthetic-seg:5", "--mix", "cutmix"],
            "--data: expected at least 9 training images for the preview, got 5",
        ),
    ],
)
def test_data_the_command_cannot_use_is_a_one_line_error(tmp_path, argv, message):
    code, _, stderr = run_main([*argv, "--out", str(tmp_path / "out")])
    assert code == 2 and message in stderr and stderr.count("\n") == 1, stderr


def test_one_user_error_hierarchy_defined_in_errors_and_importable_where_it_was():
    from cutmix.data.base import DatasetNotFoundError as from_base
    from cutmix.data.datasets import DatasetNotFoundError as from_datasets
    from cutmix.data.download import DownloadError as from_download

    assert not hasattr(errors, "CLIError")  # one name per error: the alias is gone
    assert from_download is errors.DownloadError and from_base is from_datasets is errors.DatasetNotFoundError
    assert issubclass(UsageError, ValueError) and issubclass(DataError, UsageError)
    assert issubclass(errors.DownloadError, OSError) and not issubclass(errors.DownloadError, ValueError)
    assert issubclass(errors.DatasetNotFoundError, FileNotFoundError)
    for cls in (UsageError, DataError, errors.DownloadError, errors.DatasetNotFoundError):
        assert cls.__module__ == "cutmix.errors" and cls.__name__ in errors.__all__


@pytest.mark.parametrize(
    "exception",
    [
        UsageError("--x: bad"),
        DataError("--data: bad"),
        OSError("disk full"),
        errors.DownloadError("cannot reach x"),
        errors.DatasetNotFoundError("no local copy of cifar10"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_every_user_error_of_the_hierarchy_is_one_line(monkeypatch, tmp_path, exception):
    def wrong(args):
        raise exception

    monkeypatch.setattr(demo, "run", wrong)
    code, _, stderr = run_main(["demo", "--out", str(tmp_path / "d.png")])
    assert (code, stderr) == (2, f"cutmix demo: error: {exception}\n")
