"""Nodes of the ``data`` pipeline: thin wrappers over ``pgu.core.sources``/``splits``/``data``."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch

from pgu.core.checkpoint import TensorBundle
from pgu.core.data import SampleSet, normalisation_stats
from pgu.core.sources import RawData, load_source
from pgu.core.splits import sample_index, stratified_split

logger = logging.getLogger(__name__)


def load_raw_data(data_params: dict) -> RawData:
    """Read the configured source (``data.source``) from ``data.root``.

    Args:
        data_params: the ``data`` parameters (source, root, options).

    Returns:
        Every sample of the source, in its stable order.
    """
    raw = load_source(
        data_params["source"], data_params["root"], **(data_params.get("options") or {})
    )
    logger.info(
        "loaded %s: %d samples of shape %s, %d classes",
        data_params["source"],
        len(raw.y),
        tuple(raw.x.shape[1:]),
        len(raw.classes),
    )
    return raw


def split_samples(raw: RawData, data_params: dict) -> pd.DataFrame:
    """Assign every sample to train / val / test and number it.

    Returns:
        The sample index table: ``sample_id, key, label, split`` (deletion requests cite its ids).
    """
    split = data_params["split"]
    assignment = stratified_split(
        raw.y,
        raw.origin,
        split["fractions"],
        seed=split["seed"],
        use_source_test=split.get("use_source_test", False),
    )
    index = sample_index(raw.keys, raw.y, assignment)
    logger.info("split: %s", index["split"].value_counts().to_dict())
    return index


def bundle_samples(raw: RawData, index: pd.DataFrame, data_params: dict) -> TensorBundle:
    """Pack samples, labels, ids and train-split normalisation statistics into one bundle."""
    x = torch.from_numpy(np.ascontiguousarray(raw.x))
    train_mask = torch.from_numpy((index["split"] == "train").to_numpy())
    mean, std = normalisation_stats(x[train_mask])
    samples = SampleSet(
        x=x,
        y=torch.from_numpy(raw.y.astype(np.int64)),
        sample_id=torch.from_numpy(index["sample_id"].to_numpy(dtype=np.int64, copy=True)),
        mean=mean,
        std=std,
        num_classes=len(raw.classes),
    )
    meta = {"source": data_params["source"], "classes": list(raw.classes)}
    return TensorBundle(samples.to_tensors(), meta)
