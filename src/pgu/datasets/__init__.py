"""Kedro datasets for tensors, models (safetensors, no pickle) and the deletion workspace."""

from pgu.datasets.csv_dataset import MadeByCSVDataset
from pgu.datasets.safetensors_dataset import ModelDataset, TensorBundleDataset
from pgu.datasets.workspace import WorkspaceDataset

__all__ = ["MadeByCSVDataset", "ModelDataset", "TensorBundleDataset", "WorkspaceDataset"]
