"""``--arms`` specs, ``--baseline`` and ``--vary``: names, resolved options, and every refusal."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cutmix.errors import UsageError
from cutmix.experiment.arms import (
    ARM_NAME,
    VARY_FOLDER,
    check_distinct,
    parse_arm,
    parse_arms,
    parse_vary,
    resolve_baseline,
)
from cutmix.experiment.plan import config_hash, plan
from cutmix.training.config import TrainConfig, resolve_config

ROOT = Path(__file__).resolve().parents[2]

SEED = resolve_config("seed", data="synthetic")  # alpha 0.25, p 1.0
FAST = resolve_config("fast", data="synthetic")  # alpha 1.0, p 0.5


@pytest.mark.parametrize(
    ("spec", "name", "fields"),
    [
        ("cutmix", "cutmix", {"mix": "cutmix"}),
        ("none", "none", {"mix": "none"}),
        ("cutmix:alpha=0.2:p=0.5", "cutmix_alpha=0.2_p=0.5", {"mix": "cutmix", "alpha": 0.2, "mix_p": 0.5}),
        # Spelling does not matter: the order of keys, ".2" for "0.2", the field's or the flag's name.
        ("cutmix:p=.5:alpha=.2", "cutmix_alpha=0.2_p=0.5", {"alpha": 0.2, "mix_p": 0.5}),
        ("cutmix: mix_p = 0.5 : alpha=2e-1", "cutmix_alpha=0.2_p=0.5", {"alpha": 0.2, "mix_p": 0.5}),
        ("mixup:alpha=1", "mixup_alpha=1.0", {"mix": "mixup", "alpha": 1.0}),
        ("cutout:size=8", "cutout_size=8", {"mix": "cutout", "cutout_size": 8}),
        ("cutout:cutout-size=8:p=1", "cutout_p=1.0_size=8", {"cutout_size": 8, "mix_p": 1.0}),
        ("mixup:partner=roll:mix-off-epochs=1", "mixup_partner=roll_mix-off-epochs=1",
         {"partner": "roll", "mix_off_epochs": 1}),
    ],
)  # fmt: skip
def test_arm_names_and_options(spec, name, fields):
    arm = parse_arm(spec)
    assert arm.name == name
    assert ARM_NAME.fullmatch(arm.name) and ":" not in arm.name and "/" not in arm.name
    config = arm.config(SEED, epochs=3)
    for field, value in fields.items():
        assert getattr(config, field) == value
    # Options not given come from the base (the recipe and the command line).
    untouched = {"alpha": 0.25, "mix_p": 1.0, "cutout_size": 16, "partner": "stream", "mix_off_epochs": 0}
    for field, value in untouched.items():
        if field not in fields:
            assert getattr(config, field) == value
    assert config.epochs == 3


def test_an_arm_without_options_is_the_plain_op_with_its_old_folder_and_hash(tmp_path):
    # A comparison started before arm specs existed resumes and counts after: same folders, same hashes.
    runs = plan(SEED, parse_arms("none,cutmix"), [0, 1], tmp_path)
    assert [r.path.relative_to(tmp_path).as_posix() for r in runs] == [
        "seed-0/none", "seed-0/cutmix", "seed-1/none", "seed-1/cutmix"
    ]  # fmt: skip
    # The hashes pinned as literals for the committed runs (tests/experiment/test_compare_defects.py):
    # planned from their recorded options with today's arms, each run gets its pinned hash and folder.
    pinned = _pinned_hashes()
    assert pinned
    for key, expected in pinned.items():
        recipe, seed_folder, arm = key.split("/")
        recorded = json.loads((ROOT / "docs" / "results" / key / "config.json").read_text())["config"]
        base = TrainConfig(**{**recorded, "init": None})
        seed = int(seed_folder.removeprefix("seed-"))
        (run,) = [r for r in plan(base, parse_arms("none,cutmix"), [seed], tmp_path / recipe) if r.arm == arm]
        assert run.path == tmp_path / key and config_hash(run.config) == expected, key


def _pinned_hashes() -> dict[str, str]:
    path = Path(__file__).with_name("test_compare_defects.py")
    spec = importlib.util.spec_from_file_location("pinned_hashes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.COMMITTED_RUN_HASHES


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cutmx", "expected a mixing op among none, cutmix, mixup, cutout, got 'cutmx'"),
        ("cutmix:beta=1", "expected key=value with a key among alpha, p, size, partner, mix-off-epochs, got 'beta=1'"),
        ("cutmix:alpha", "got 'alpha'"),
        ("cutout:alpha=1", "expected options cutout reads (size, p, mix-off-epochs), got alpha"),
        ("none:p=0.5", "expected options none reads (no option), got p"),
        ("cutmix:alpha=1:alpha=2", "expected each key once, got alpha twice"),
        ("cutmix:alpha=x", "expected a finite number for alpha, got 'x'"),
        ("cutmix:alpha=nan", "expected a finite number for alpha, got 'nan'"),
        ("cutout:size=1.5", "expected an integer for cutout-size, got '1.5'"),
        ("cutmix:alpha=-1", "--alpha: expected a finite number > 0, got -1.0"),
        ("cutmix:p=2", "--mix-p: expected a number in [0, 1], got 2.0"),
        ("cutmix:partner=left", "--partner: expected one of"),
        ("cutmix:mix-off-epochs=99", "--mix-off-epochs: expected 0..15"),
    ],
)  # fmt: skip
def test_bad_specs_are_refused_naming_the_spec(spec, message):
    with pytest.raises(UsageError) as info:
        parse_arm(spec).config(SEED)
    assert str(info.value).startswith(f"--arms: {spec!r}: ")
    assert message in str(info.value)


def test_two_spellings_of_one_arm_are_refused():
    with pytest.raises(
        UsageError, match=r"expected each arm once, got 'cutmix:alpha=.2' and 'cutmix:alpha=0.2'"
    ):
        parse_arms("none,cutmix:alpha=.2,cutmix:alpha=0.2")
    with pytest.raises(UsageError, match="--arms: expected a comma-separated list"):
        parse_arms(" , ")


def test_arms_that_resolve_to_one_configuration_are_refused():
    # The seed recipe's alpha is 0.25: `cutmix:alpha=0.25` would train `cutmix` again.
    with pytest.raises(UsageError, match=r"got 'cutmix' and 'cutmix:alpha=0.25', which resolve to the same"):
        check_distinct(parse_arms("cutmix,cutmix:alpha=0.25"), SEED)
    check_distinct(parse_arms("cutmix,cutmix:alpha=0.25"), FAST)  # alpha 1.0 there: two arms
    # A Cutout size is an option CutMix does not read, so it cannot be given to it at all.
    with pytest.raises(UsageError, match="expected options cutmix reads"):
        parse_arms("cutmix,cutmix:size=8")


def test_baseline():
    arms = parse_arms("none,cutmix,cutmix:alpha=0.2")
    assert resolve_baseline(None, arms) == "none"
    assert resolve_baseline(None, parse_arms("cutmix,mixup")) is None  # no none: no paired differences
    assert resolve_baseline("cutmix:alpha=.2", arms) == "cutmix_alpha=0.2"
    assert resolve_baseline("cutmix_alpha=0.2".replace("_", ":"), arms) == "cutmix_alpha=0.2"
    with pytest.raises(UsageError, match=r"--baseline: expected one of the arms \(none, cutmix, cutmix_alpha=0.2\), "
                                         r"written as in --arms, got 'mixup'"):  # fmt: skip
        resolve_baseline("mixup", arms)
    with pytest.raises(UsageError, match=r"^--baseline: 'cutmx'"):
        resolve_baseline("cutmx", arms)


def test_vary():
    vary = parse_vary("epochs=15,30,60")
    assert (vary.field, vary.values, vary.folder(15)) == ("epochs", (15, 30, 60), "epochs=15")
    assert parse_vary("batch-size=64,128").field == "batch_size"
    assert parse_vary("--weight-decay=5e-4,0.001").values == (0.0005, 0.001)
    assert parse_vary("lr=.1,0.2").folder(0.1) == "lr=0.1"
    assert parse_vary("normalize=true,no").values == (True, False)
    assert parse_vary("mix-p=0.5,1").values == (0.5, 1.0)  # every arm's p, where no arm sets it
    for value in (15, 0.1, True, "sgd"):
        assert VARY_FOLDER.fullmatch(parse_vary("epochs=1,2").folder(value))


@pytest.mark.parametrize(
    ("text", "arms", "message"),
    [
        ("epochs", "", "expected KEY=V1,V2,... with KEY among"),
        ("seed=1,2", "", "with KEY among"),
        ("mix=none,cutmix", "", "with KEY among"),
        ("data=a,b", "", "with KEY among"),
        ("colour=1,2", "", "got 'colour=1,2'"),
        ("epochs=15", "", "expected at least two values for epochs"),
        ("epochs=a,b", "", "--vary epochs: expected an integer for epochs, got 'a'"),
        ("lr=.1,0.1", "", "expected each value once, got 0.1, 0.1"),
        ("alpha=0.2,1", "none,cutmix:alpha=0.5", "expected a setting no arm sets itself, got alpha"),
    ],
)
def test_bad_vary_is_refused(text, arms, message):
    with pytest.raises(UsageError) as info:
        parse_vary(text, parse_arms(arms) if arms else ())
    assert str(info.value).startswith("--vary")
    assert message in str(info.value)


def test_a_vary_value_the_config_refuses_names_vary(tmp_path):
    with pytest.raises(UsageError, match=r"^--vary epochs=0: --epochs: expected an integer >= 1, got 0"):
        plan(SEED, parse_arms("none"), [0], tmp_path, parse_vary("epochs=0,1"))


@given(st.floats(min_value=1e-6, max_value=1e3, allow_nan=False), st.floats(min_value=0.01, max_value=1.0))
def test_any_resolved_value_makes_a_name_that_parses_back_to_the_same_arm(alpha, p):
    arm = parse_arm(f"cutmix:alpha={alpha!r}:p={p!r}")
    assert ARM_NAME.fullmatch(arm.name)
    again = parse_arm(arm.name.replace("_", ":"))
    assert again.name == arm.name and again.config(FAST) == arm.config(FAST)
