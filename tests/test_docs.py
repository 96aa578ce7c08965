"""The documentation site builds strictly, and every Python block in it runs.

Blocks of one page run in order in one namespace, as a reader would paste them. A block that needs
what a test machine lacks (torchrun, a GPU, a cluster) is preceded by a line
``<!-- docs-test: skip REASON -->`` and reported as skipped with that reason.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# The recipes' comparisons, which docs/results.md quotes (a study's report, across the values of --vary,
# is checked against its run records by tests/experiment/test_compare_study.py).
REPORTS = [
    p for p in sorted((DOCS / "results").glob("*/report.json")) if "effects" not in json.loads(p.read_text())
]
BLOCK = re.compile(r"(?:<!-- docs-test: skip (?P<skip>[^>]*?) -->\n)?```python\n(?P<code>.*?)```", re.S)


def pages() -> list[Path]:
    # docs/results/*/report.md are the comparison's own reports: no Python in them.
    return sorted(p for p in DOCS.rglob("*.md") if "results" not in p.relative_to(DOCS).parts[:-1])


def blocks(page: Path) -> list[tuple[str | None, str]]:
    return [(m["skip"], m["code"]) for m in BLOCK.finditer(page.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("page", [p for p in pages() if blocks(p)], ids=lambda p: str(p.relative_to(DOCS)))
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks that write files write them here
    namespace: dict = {"__name__": "__docs__"}
    ran, skipped = 0, []
    for index, (skip, code) in enumerate(blocks(page)):
        if skip:
            skipped.append(skip)
            continue
        # Keras is in the test extra; without it, say so rather than fail. (Not imported here: the
        # block itself picks the backend before Keras is imported.)
        if "keras" in code and importlib.util.find_spec("keras") is None:
            pytest.skip("keras is not installed (pip install -e '.[test]')")
        exec(compile(code, f"{page}:block{index}", "exec"), namespace)  # noqa: S102
        ran += 1
    if not ran:
        pytest.skip("; ".join(skipped))


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in pages():
        assert str(page.relative_to(DOCS)) in nav, f"{page} is not in mkdocs.yml's nav"


def test_mkdocs_builds_strictly(tmp_path):
    if shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None:
        if os.environ.get("CI") == "true":
            pytest.fail("mkdocs is not installed: the test extra must install it in CI")
        pytest.skip("mkdocs not installed (pip install -e '.[test]')")
    mkdocs = str(Path(sys.executable).parent / "mkdocs")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "api" / "index.html").is_file()


def test_every_block_marker_is_followed_by_a_python_block():
    """A skip marker that does not sit right above a ```python block would silently skip nothing."""
    for page in pages():
        text = page.read_text(encoding="utf-8")
        markers = len(re.findall(r"^<!-- docs-test: skip ", text, flags=re.M))
        assert markers == sum(1 for skip, _ in blocks(page) if skip), page


def test_results_page_matches_the_committed_reports():
    """Every number in the tables on docs/results.md is the one its committed report.json holds:
    each arm's n, mean ± sd and per-seed accuracies, each paired difference with its sd, interval and
    verdict, and the per-seed differences."""
    text = (DOCS / "results.md").read_text(encoding="utf-8")
    assert REPORTS, "docs/results holds no report"
    for path in REPORTS:
        report = json.loads(path.read_text(encoding="utf-8"))
        section = _section(text, f"(`--recipe {report['recipe']}`)")
        assert f"--recipe {report['recipe']}" in section.split("```")[1], (path, "its command")
        assert f"](results/{path.parent.name}/curves.png)" in section, (path, "its curves")
        assert f"](results/{path.parent.name}/report.md)" in text, (path, "a link to the report")
        for arm in report["arms"]:
            accuracy = report["per_arm"][arm]["test_acc"]
            cells = _row(section, arm)
            assert cells[1] == str(accuracy["n"]) == str(len(report["seeds"])), (path, arm)
            expected = f"{100 * accuracy['mean']:.2f}%"
            if accuracy["std"] is not None:
                expected += f" ± {100 * accuracy['std']:.2f}"
            assert cells[2] == expected, (path, arm, cells)
            if accuracy["n"] > 1:  # the per-seed column
                assert cells[-1] == ", ".join(f"{100 * v:.2f}%" for v in accuracy["values"]), (path, arm)
            else:  # the wall-time column
                wall = report["per_arm"][arm]["wall_time"]["mean"]
                assert cells[3] == f"{round(wall):,} s", (path, arm, cells)
        for arm, paired in report["paired"].items():
            difference = paired["test_acc"]
            cells = _row(section, f"{arm} − {report['baseline']}")
            assert cells[1] == str(difference["n"]), (path, arm)
            expected = _pp(difference["mean"])
            if difference["low"] is None:
                expected += f", no interval (n = {difference['n']})"
            else:
                interval = f"[{_pp(difference['low'])[:-3]}, {_pp(difference['high'])[:-3]}] pp"
                confidence = f"{100 * difference['confidence']:.0f}% interval"
                expected += f" (sd {100 * difference['std']:.2f} pp), {confidence} {interval}, {difference['verdict']}"
            assert cells[2] == expected, (path, arm, cells)
            if difference["n"] > 1:
                per_seed = ", ".join(_pp(d)[:-3] for d in difference["differences"]) + " pp"
                assert cells[3] == per_seed, (path, arm, cells)


def _section(text: str, heading: str) -> str:
    """The part of a page under the ``## `` heading that contains ``heading``, up to the next one."""
    (section,) = [part for part in text.split("\n## ")[1:] if heading in part.split("\n", 1)[0]]
    return section


def _row(section: str, label: str) -> list[str]:
    """The cells of the table row whose first cell is ``label``."""
    rows = [line for line in section.splitlines() if line.startswith(f"| {label} |")]
    assert len(rows) == 1, (label, rows)
    return [cell.strip() for cell in rows[0].strip().strip("|").split("|")]


def _pp(fraction: float) -> str:
    """A difference of accuracies as the pages write it: percentage points with a real minus sign."""
    return f"{100 * fraction:+.2f} pp".replace("-", "−")


def test_results_page_robustness_tables_match_the_committed_reports():
    """Each recipe whose committed report has the robustness suite shows it on docs/results.md: per
    metric, each arm's mean ± sd over seeds and each paired difference with its interval and verdict,
    as report.json holds them; and the figures."""
    text = (DOCS / "results.md").read_text(encoding="utf-8")
    with_suite = [p for p in REPORTS if json.loads(p.read_text(encoding="utf-8")).get("robustness")]
    for path in with_suite:
        report = json.loads(path.read_text(encoding="utf-8"))
        rob, baseline = report["robustness"], report["baseline"]
        section = _section(text, f"(`--recipe {report['recipe']}`)")
        for figure in ("robustness.png", "cam.png"):
            assert f"](results/{path.parent.name}/{figure})" in section, (path, figure)
        others = [a for a in report["arms"] if a != baseline]
        for metric in rob["metrics"]:
            cells = _row(section, metric["label"])
            pct = metric["unit"] == "pct"
            assert cells[1 : 1 + len(report["arms"])] == [
                _robustness_cell(rob["per_arm"][arm][metric["key"]], pct) for arm in report["arms"]
            ], (path, metric["key"], cells)
            for i, arm in enumerate(others):
                paired = rob["paired"][arm][metric["key"]]
                assert cells[1 + len(report["arms"]) + i] == _robustness_difference(paired, pct), (
                    path,
                    metric,
                    cells,
                )


def _robustness_cell(d: dict, pct: bool) -> str:
    return f"{100 * d['mean']:.2f}% ± {100 * d['std']:.2f}" if pct else f"{d['mean']:.4f} ± {d['std']:.4f}"


def _robustness_difference(p: dict, pct: bool) -> str:
    def show(x: float) -> str:
        return (f"{100 * x:+.2f}" if pct else f"{x:+.4f}").replace("-", "−")

    unit = " pp" if pct else ""
    return f"{show(p['mean'])}{unit} [{show(p['low'])}, {show(p['high'])}], {p['verdict']}"
