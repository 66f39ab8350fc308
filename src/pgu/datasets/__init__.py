"""Kedro datasets for tensors and models stored as safetensors (no pickle anywhere)."""

from pgu.datasets.safetensors_dataset import ModelDataset, TensorBundleDataset

__all__ = ["ModelDataset", "TensorBundleDataset"]
