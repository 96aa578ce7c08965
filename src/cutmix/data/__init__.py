"""Data: datasets in their official formats and image folders, verified downloads, and the
device-side loader."""

from cutmix.data.datasets import Dataset, load_dataset
from cutmix.data.loader import DeviceLoader, stratified_split

__all__ = ["Dataset", "DeviceLoader", "load_dataset", "stratified_split"]
