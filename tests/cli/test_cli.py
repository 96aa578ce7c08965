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


def test_demo_writes_the_format_of_the_suffix(tmp_path):
    out = tmp_path / "demo.jpg"
    assert main(["demo", "--out", str(out)]) == 0
    with Image.open(out) as image:
        assert image.format == "JPEG"  # not PNG bytes under a .jpg name


def test_demo_refuses_to_overwrite_what_it_did_not_write(tmp_path, capsys):
    mine = tmp_path / "demo.png"
    mine.write_text("my notes")
    assert main(["demo", "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cutmix demo: error: --out:") and "--force" in err and err.count("\n") == 1
    assert mine.read_text() == "my notes"
    assert main(["demo", "--out", str(mine), "--force"]) == 0
    with Image.open(mine) as image:
        assert image.format == "PNG"
    assert main(["demo", "--out", str(tmp_path / "demo.gif")]) == 2
    assert "--out: expected a picture file ending in" in capsys.readouterr().err
