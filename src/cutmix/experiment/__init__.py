"""The comparison: several arms (mixing ops) × seeds trained and reported on, as `cutmix compare` does.

- :mod:`.arms`: ``--arms`` specs (an op with options of its own) and ``--vary``;
- :mod:`.plan`: the runs (arms × seeds) as run folders of ``--out``, their configurations and
  config hashes, and what each folder already holds;
- :mod:`.folder`: what ``--out`` may hold, and what ``--force`` clears;
- :mod:`.locks`: the lock files of ``--out`` and of each run folder;
- :mod:`.runners`: where the planned runs train (this process, or local child processes);
- :mod:`.comparison`: :func:`compare`, the steps from the options to the report;
- :mod:`.outputs`: comparison.json and the reports, and their rebuild from run folders (`cutmix report`);
- :mod:`.report`: the statistics, report.md's tables and curves.png.
"""

from cutmix.experiment.arms import Arm, Vary, parse_arms, parse_vary
from cutmix.experiment.comparison import compare
from cutmix.experiment.outputs import rebuild_report
from cutmix.experiment.plan import PlannedRun, config_hash, hashed_options, plan
from cutmix.experiment.runners import RunsFailedError, run_planned

__all__ = [
    "Arm",
    "PlannedRun",
    "RunsFailedError",
    "compare",
    "config_hash",
    "hashed_options",
    "Vary",
    "parse_arms",
    "parse_vary",
    "plan",
    "rebuild_report",
    "run_planned",
]
