"""TrainConfig: every field checked before anything runs, and one command-line flag per field."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from dataclasses import fields, replace

import pytest
import torch

from cutmix.cli import build_parser, main
from cutmix.errors import UsageError
from cutmix.training.config import (
    OPTION_HELP,
    TrainConfig,
    add_train_options,
    arm_configs,
    check_device,
    config_from_args,
    resolve_config,
)

TINY = ["--data", "synthetic:128", "--depth", "8", "--batch-size", "64", "--device", "cpu", "--quiet"]


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(alpha=0.0), "--alpha: expected a finite number > 0, got 0.0"),
        (dict(alpha=float("nan")), "--alpha: expected a finite number > 0, got nan"),
        (dict(mix_p=1.5), "--mix-p: expected a number in [0, 1], got 1.5"),
        (dict(label_smoothing=1.0), "--label-smoothing: expected a number in [0, 1), got 1.0"),
        (dict(cutout_size=-1), "--cutout-size: expected an integer >= 0, got -1"),
        (dict(warmup=1.0), "--warmup: expected a number in [0, 1), got 1.0"),
        (dict(momentum=-0.5), "--momentum: expected a number in [0, 1), got -0.5"),
        (dict(adam_eps=0.0), "--adam-eps: expected a finite number > 0, got 0.0"),
        (dict(weight_decay=-1e-4), "--weight-decay: expected a finite number >= 0, got -0.0001"),
        (dict(l2=float("inf")), "--l2: expected a finite number >= 0, got inf"),
        (dict(depth=21), "--depth: expected 6n+2 with n >= 1 (8, 14, 20, 32, ...), got 21"),
        (dict(seed=-1), "--seed: expected an integer >= 0, got -1"),
        (dict(eval_batch_size=0), "--eval-batch-size: expected an integer >= 1, got 0"),
        (dict(optimizer="sgd", momentum=0.0), "--nesterov: expected --momentum > 0 with Nesterov momentum"),
        (dict(epochs=2.5), "--epochs: expected an integer, got 2.5"),
        (dict(nesterov="yes"), "--nesterov: expected true or false, got 'yes'"),
        (dict(batch_size=True), "--batch-size: expected an integer, got True"),
        (dict(data=""), "--data: expected a dataset name or path, got ''"),
        (dict(device="gpu"), "--device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu'"),
    ],
)
def test_validate_checks_every_option_and_names_its_flag(overrides, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        resolve_config("seed", **{"data": "synthetic", **overrides})


def test_the_limits_themselves_are_accepted():
    config = resolve_config("seed", data="synthetic", mix_p=0.0, label_smoothing=0.0, warmup=0.0, cutout_size=0,
                            momentum=0.0, optimizer="sgd", nesterov=False, weight_decay=0.0, l2=0.0, depth=8)  # fmt: skip
    assert (config.mix_p, config.warmup, config.depth, config.nesterov) == (0.0, 0.0, 8, False)


def test_every_arm_of_a_comparison_is_validated():
    base = resolve_config("seed", data="synthetic")
    configs = arm_configs(base, ["none", "cutmix"], [0, 1])
    assert [(c.mix, c.seed) for c in configs] == [("none", 0), ("cutmix", 0), ("none", 1), ("cutmix", 1)]
    with pytest.raises(UsageError, match=re.escape("--alpha: expected a finite number > 0, got 0.0")):
        arm_configs(replace(base, alpha=0.0), ["none", "cutmix"], [0])


def test_compare_refuses_a_bad_alpha_before_training_anything(tmp_path):
    out = tmp_path / "cmp"
    code, _, stderr = run_main(
        ["compare", *TINY, "--epochs", "1", "--seeds", "1", "--alpha", "0", "--out", str(out)]
    )
    assert code == 2
    assert "--alpha: expected a finite number > 0, got 0.0" in stderr
    assert not out.exists()  # no run of the `none` arm was trained first


def test_every_field_has_a_flag_with_help_and_the_recipe_decides():
    parser = argparse.ArgumentParser()
    add_train_options(parser, exclude=())
    actions = {a.dest: a for a in parser._actions}
    for f in fields(TrainConfig):
        action = actions[f.name]
        assert action.option_strings[0] == "--" + f.name.replace("_", "-")
        assert action.help and action.help == OPTION_HELP[f.name].replace("%", "%%")
        assert action.default is None or f.name == "recipe", f.name
    # Nothing given: the recipe's values (and --data's CLI default, cifar10).
    assert config_from_args(parser.parse_args([])) == resolve_config("seed", data="cifar10")
    args = parser.parse_args(["--data", "synthetic", "--recipe", "fast", "--no-nesterov", "--adam-eps", "1e-8",
                              "--warmup", "0.1", "--no-channels-last", "--eval-batch-size", "500", "--seed", "4"])  # fmt: skip
    config = config_from_args(args)
    assert (config.nesterov, config.adam_eps, config.warmup, config.channels_last) == (
        False,
        1e-8,
        0.1,
        False,
    )
    assert (config.eval_batch_size, config.seed, config.recipe, config.lr) == (500, 4, "fast", 0.2)


def test_compare_has_no_per_run_flags_and_train_has_them():
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    compare_flags = subparsers.choices["compare"]._option_string_actions
    train_flags = subparsers.choices["train"]._option_string_actions
    assert "--seed" not in compare_flags and "--init" not in compare_flags
    assert {"--seed", "--init", "--nesterov", "--no-nesterov", "--warmup", "--channels-last"} <= set(
        train_flags
    )
    assert {"--nesterov", "--adam-eps", "--warmup", "--channels-last", "--eval-batch-size"} <= set(
        compare_flags
    )


def test_check_device_lists_the_available_devices(monkeypatch):
    assert check_device("auto") == "auto" and check_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(UsageError, match=r"--device: no CUDA device is available .*; available: cpu"):
        check_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UsageError, match=r"expected a CUDA device index below 2, got 'cuda:2'; available: cpu, "
                                         r"cuda:0, cuda:1"):  # fmt: skip
        check_device("cuda:2")
    assert check_device("cuda:1") == "cuda:1"


def test_train_on_a_missing_cuda_device_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    out = tmp_path / "run"
    code, _, stderr = run_main(["train", *TINY[:-3], "--device", "cuda", "--epochs", "1", "--out", str(out)])
    assert code == 2, stderr
    assert stderr.startswith("cutmix train: error: --device: no CUDA device is available")
    assert "available: cpu" in stderr and "Traceback" not in stderr and len(stderr.splitlines()) == 1
    assert not out.exists()
    code, _, stderr = run_main(["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--device", "cuda:3"])
    assert code == 2 and "--device: no CUDA device is available" in stderr


def test_compare_rebuilds_its_command_line_with_the_new_boolean_flags():
    from cutmix.cli.compare import command_from_args

    argv = ["compare", *TINY, "--no-nesterov", "--channels-last", "--warmup", "0.1", "--out", "o"]
    args = build_parser().parse_args(argv)
    again = build_parser().parse_args(command_from_args(args))
    assert {k: v for k, v in vars(again).items() if k != "func"} == {
        k: v for k, v in vars(args).items() if k != "func"
    }
    assert (args.nesterov, args.channels_last, args.warmup) == (False, True, 0.1)
