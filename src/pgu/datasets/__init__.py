"""Kedro datasets for tensors, models (safetensors, no pickle) and the deletion workspace."""

from pgu.datasets.safetensors_dataset import ModelDataset, TensorBundleDataset
from pgu.datasets.workspace import WorkspaceDataset

__all__ = ["ModelDataset", "TensorBundleDataset", "WorkspaceDataset"]
