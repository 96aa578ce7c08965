"""The README is the landing page: short, its example runs, and its headline numbers are the
committed reports' (the full tables are on docs/results.md, checked by tests/test_docs.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_training_loop_example_runs():
    blocks = python_blocks()
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102
    targets, loss = namespace["targets"], namespace["loss"]
    assert targets.shape == (32, 10) and abs(float(targets.sum(1).mean()) - 1.0) < 1e-6
    assert loss.ndim == 0 and bool(loss.isfinite())
    # The smoothed targets never reach 0: the op applied label smoothing.
    assert float(targets.min()) > 0


def test_readme_is_a_landing_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move detail to docs/"


def test_readme_links_to_the_docs():
    text = README.read_text(encoding="utf-8")
    for page in ("docs/ops.md", "docs/keras.md", "docs/results.md", "docs/development.md"):
        assert f"]({page})" in text, page
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (README.parent / target).exists(), target
    assert "mkdocs serve" in text and "mkdocs build" in text


def test_readme_quick_start_commands_exist():
    text = README.read_text(encoding="utf-8")
    assert (
        "bash scripts/setup.sh && .venv/bin/cutmix compare --data synthetic --epochs 2 --seeds 2 --out runs/quickstart"
        in text
    )
    assert "bash scripts/test.sh" in text
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    assert "scripts/test.sh" in ci, ".ci/run must call the README's test command"


def test_readme_results_match_the_committed_reports():
    """Every accuracy the README's Results section states is the one its committed report holds."""
    text = README.read_text(encoding="utf-8")
    results = text.split("## Results on CIFAR-10", 1)[1].split("\n## ", 1)[0]
    # The recipes' CIFAR-10 comparisons; a study across --vary values (synthetic data) is not quoted here.
    found = sorted((README.parent / "docs" / "results").glob("*/report.json"))
    reports = [p for p in found if "effects" not in json.loads(p.read_text(encoding="utf-8"))]
    assert reports, "docs/results holds no report"
    for path in reports:
        report = json.loads(path.read_text(encoding="utf-8"))
        assert f"--recipe {report['recipe']}" in results, path
        for arm in report["arms"]:
            accuracy = report["per_arm"][arm]["test_acc"]
            row = f"| {arm} | {accuracy['n']} | {100 * accuracy['mean']:.2f}%"
            if accuracy["std"] is not None:
                row += f" ± {100 * accuracy['std']:.2f}"
            assert row in results, (path, arm)
        for arm, paired in report["paired"].items():
            difference = paired["test_acc"]
            assert _pp(difference["mean"]) in results, (path, arm)
            if difference["low"] is not None:
                interval = f"[{_pp(difference['low'])[:-3]}, {_pp(difference['high'])[:-3]}] pp"
                assert f"{interval}, {difference['verdict']}" in results, (path, arm)


def _pp(fraction: float) -> str:
    """A difference of accuracies as the README writes it: percentage points with a real minus sign."""
    return f"{100 * fraction:+.2f} pp".replace("-", "−")
