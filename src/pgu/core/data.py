"""Samples as tensors: one bundle holds every sample, its label, its stable id and the
normalisation statistics, and hands out normalised model inputs by split or by id.

Images stay uint8 in storage (a quarter of float32's size; CIFAR-10 is 184 MB instead of 737 MB)
and are scaled to [0, 1] and standardised per channel only when a batch is taken.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor


@dataclass(frozen=True)
class SampleSet:
    """A set of samples with labels, ids and the statistics that normalise them.

    Attributes:
        x: (N, C, H, W) uint8 images, or (N, ...) float32 features already in a sensible range.
        y: (N,) int64 labels in [0, num_classes).
        sample_id: (N,) int64 stable ids (the ``sample_id`` column of the sample index).
        mean: (C,) per-channel mean for images, (F,) per-feature mean for tabular data, in the
            units of ``x`` after uint8 scaling to [0, 1].
        std: same shape as ``mean``; never zero.
        num_classes: number of classes of the task (not only those present here).
    """

    x: Tensor
    y: Tensor
    sample_id: Tensor
    mean: Tensor
    std: Tensor
    num_classes: int

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of one model input, batch dimension excluded."""
        return tuple(self.x.shape[1:])

    def inputs(self, idx: Tensor | slice | None = None) -> Tensor:
        """Normalised float32 model inputs for rows ``idx`` (all rows when None): (B, *in_shape)."""
        x = self.x if idx is None else self.x[idx]
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        # Broadcast per-channel statistics over spatial dims: (C,) → (C, 1, 1).
        extra = x.dim() - 1 - self.mean.dim()
        shape = tuple(self.mean.shape) + (1,) * extra
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def to(self, device: str | torch.device) -> SampleSet:
        """This set with images, labels and statistics on ``device``; ids stay on the CPU."""
        device = torch.device(device)
        if self.x.device == device and self.y.device == device:
            return self
        return SampleSet(
            self.x.to(device),
            self.y.to(device),
            self.sample_id,
            self.mean.to(device),
            self.std.to(device),
            self.num_classes,
        )

    def take(self, idx: Tensor) -> SampleSet:
        """The rows ``idx`` (a boolean mask or integer positions) as a new SampleSet."""
        return SampleSet(
            self.x[idx], self.y[idx], self.sample_id[idx], self.mean, self.std, self.num_classes
        )

    def with_ids(self, ids: Sequence[int] | Tensor) -> SampleSet:
        """The samples whose ``sample_id`` is in ``ids``, in this set's order."""
        ids = torch.as_tensor(np.array(ids, dtype=np.int64))  # a copy: ids may be read-only
        return self.take(torch.isin(self.sample_id, ids))

    def without_ids(self, ids: Sequence[int] | Tensor) -> SampleSet:
        """This set minus the samples whose ``sample_id`` is in ``ids``."""
        ids = torch.as_tensor(np.array(ids, dtype=np.int64))  # a copy: ids may be read-only
        return self.take(~torch.isin(self.sample_id, ids))

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (inputs (B, *in_shape) float32, labels (B,) int64), shuffled given a generator."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch size must be a positive integer, got {batch_size!r}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else None
        for start in range(0, n, batch_size):
            idx = (
                order[start : start + batch_size]
                if order is not None
                else slice(start, start + batch_size)
            )
            yield self.inputs(idx), self.y[idx]

    def to_tensors(self) -> dict[str, Tensor]:
        """Flat tensor dict for safetensors storage (``num_classes`` travels as a 0-d tensor)."""
        return {
            "x": self.x.contiguous(),
            "y": self.y.contiguous(),
            "sample_id": self.sample_id.contiguous(),
            "mean": self.mean.contiguous(),
            "std": self.std.contiguous(),
            "num_classes": torch.tensor(self.num_classes, dtype=torch.int64),
        }

    @classmethod
    def from_tensors(cls, t: dict[str, Tensor]) -> SampleSet:
        """Inverse of :meth:`to_tensors`."""
        missing = {"x", "y", "sample_id", "mean", "std", "num_classes"} - set(t)
        if missing:
            raise ValueError(
                f"sample bundle lacks tensors {sorted(missing)}; rerun the data pipeline"
            )
        return cls(t["x"], t["y"], t["sample_id"], t["mean"], t["std"], int(t["num_classes"]))


def normalisation_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel (images) or per-feature (tabular) mean and std of ``x`` after uint8 scaling.

    Args:
        x: (N, C, H, W) or (N, F) samples, normally the train split only.

    Returns:
        (mean, std), each (C,) or (F,) float32; std floored at 1e-6 so constant features are safe.
    """
    xf = x.double() / 255.0 if x.dtype == torch.uint8 else x.double()
    dims = [0] + list(range(2, xf.dim()))  # every dim but the channel/feature one
    mean = xf.mean(dim=dims)
    std = xf.std(dim=dims, unbiased=False).clamp_min(1e-6)
    return mean.float(), std.float()


def indexed_samples(
    x: np.ndarray, y: np.ndarray, index: pd.DataFrame, num_classes: int
) -> SampleSet:
    """Every sample with its index-table id, normalised by the train split's statistics.

    Args:
        x: (N, ...) samples in the source's order (uint8 images or float features).
        y: (N,) labels.
        index: the sample index table in the same order (``sample_id``, ``split``).
        num_classes: number of classes of the task.
    """
    xt = torch.from_numpy(np.ascontiguousarray(x))
    train_mask = torch.from_numpy((index["split"] == "train").to_numpy(copy=True))
    mean, std = normalisation_stats(xt[train_mask])
    return SampleSet(
        x=xt,
        y=torch.from_numpy(y.astype(np.int64)),
        sample_id=torch.from_numpy(index["sample_id"].to_numpy(dtype=np.int64, copy=True)),
        mean=mean,
        std=std,
        num_classes=num_classes,
    )


def split_ids(index: pd.DataFrame, split: str) -> np.ndarray:
    """Sample ids of one split ("train", "val" or "test") of the sample index table, sorted."""
    if split not in set(index["split"].unique()) | {"train", "val", "test"}:
        raise ValueError(f"unknown split {split!r}; expected train, val or test")
    return np.sort(index.loc[index["split"] == split, "sample_id"].to_numpy(dtype=np.int64))


def split_set(samples: SampleSet, index: pd.DataFrame, split: str) -> SampleSet:
    """The samples of one split of the sample index table."""
    return samples.with_ids(split_ids(index, split))


def data_fingerprint(tensors: Mapping[str, Tensor], index: pd.DataFrame) -> str:
    """sha256 of the data a model and its statistics are built from: every tensor of the sample
    bundle (inputs, labels, ids, the train split's normalisation statistics) and each sample's
    split. A rebuilt bundle or index with other data, another split or other normalisation has
    another fingerprint; the same data rebuilt has the same one.
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    table = index[["sample_id", "split"]].sort_values("sample_id")
    h.update(table.to_csv(index=False, lineterminator="\n").encode())
    return h.hexdigest()


def excluded_train_ids(index: pd.DataFrame, ids: Sequence[int] | None) -> np.ndarray:
    """``train.exclude_sample_ids`` checked against the sample index: sorted int64 (n,).

    Raises:
        ValueError: a non-integer, duplicate, unknown or non-train id (naming them).
    """
    ids = list(ids or [])
    where = "parameters_train.yml: train.exclude_sample_ids"
    bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, (int, np.integer))]
    if bad:
        raise ValueError(f"{where} must be sample ids (integers), got {bad[:10]}")
    out, counts = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{where} lists ids twice: {out[counts > 1][:10].tolist()}")
    train = split_ids(index, "train")
    stray = np.setdiff1d(out, train)
    if stray.size:
        raise ValueError(
            f"{where}: {stray[:10].tolist()} are not training samples (unknown ids, or in the "
            "val/test splits); ids are the sample_id column of the sample index with split train"
        )
    return out
