"""Nodes of the ``data`` pipeline: thin wrappers over ``pgu.core.sources``/``splits``/``data``."""

from __future__ import annotations

import logging

import pandas as pd

from pgu.core.checkpoint import TensorBundle
from pgu.core.data import indexed_samples
from pgu.core.sources import RawData, load_source
from pgu.core.splits import split_index

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
    index = split_index(raw.y, raw.origin, raw.keys, data_params["split"])
    logger.info("split: %s", index["split"].value_counts().to_dict())
    return index


def bundle_samples(raw: RawData, index: pd.DataFrame, data_params: dict) -> TensorBundle:
    """Pack samples, labels, ids and train-split normalisation statistics into one bundle."""
    samples = indexed_samples(raw.x, raw.y, index, len(raw.classes))
    meta = {"source": data_params["source"], "classes": list(raw.classes)}
    return TensorBundle(samples.to_tensors(), meta)
