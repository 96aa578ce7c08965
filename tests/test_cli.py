"""The `cutmix` command, called in-process through main(argv)."""

from __future__ import annotations

import pytest
from PIL import Image

import cutmix
from cutmix.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"cutmix {cutmix.__version__}"


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: cutmix" in capsys.readouterr().out


def test_demo_writes_a_picture(tmp_path, capsys):
    out = tmp_path / "sub" / "demo.png"
    assert main(["demo", "--out", str(out), "--seed", "3"]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 500 and image.size[1] > 300
    assert str(out) in capsys.readouterr().out
    assert [p.name for p in out.parent.iterdir()] == ["demo.png"]  # no temporary file left behind


def test_unknown_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--bogus"])
    assert exit_info.value.code == 2
    assert "--bogus" in capsys.readouterr().err
