"""Data: datasets in their official formats and image folders, verified downloads, and the
device-side loader."""

from cutmix.data.datasets import Dataset, load_dataset
from cutmix.data.loader import DeviceLoader, stratified_split
from cutmix.data.segmentation import SegmentationDataset, make_synthetic_seg

__all__ = [
    "Dataset",
    "DeviceLoader",
    "SegmentationDataset",
    "load_dataset",
    "make_synthetic_seg",
    "stratified_split",
]
