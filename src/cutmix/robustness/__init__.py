"""Beyond accuracy: what a trained checkpoint does under occlusion, FGSM, noise images and
CIFAR-10-C-style corruptions, how well it is calibrated, and where it looks (CAM).

:func:`evaluate_robustness` is the suite (``cutmix robustness``); :mod:`cutmix.robustness.metrics`,
:mod:`cutmix.robustness.corruptions`, :mod:`cutmix.robustness.attacks` and
:mod:`cutmix.robustness.cam` are its parts, usable alone. See docs/robustness.md.
"""

from cutmix.robustness.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from cutmix.robustness.suite import DEFAULT_BATCH_SIZE, evaluate_robustness

__all__ = ["CORRUPTIONS", "DEFAULT_BATCH_SIZE", "SEVERITIES", "corrupt", "evaluate_robustness"]
