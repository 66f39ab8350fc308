"""Nodes of the ``representation`` pipeline: a thin wrapper over ``pgu.core.representation``."""

from __future__ import annotations

import logging

import pandas as pd
from torch import nn

from pgu.core.checkpoint import TensorBundle, model_hash
from pgu.core.data import SampleSet, split_set
from pgu.core.representation import collect_representations_sharded
from pgu.core.training import resolve_device

logger = logging.getLogger(__name__)


def collect_full_statistics(
    model: nn.Module, samples: TensorBundle, index: pd.DataFrame, params: dict
) -> TensorBundle:
    """R_l = Σ a aᵀ per Conv2d/Linear layer over the whole train split, once, after training.

    Args:
        model: the original model (its hash is stored with the matrices: requests must compute
            their forget statistics with this same model for R_full − R_forget to be exact).
        samples: the sample bundle.
        index: the sample index table.
        params: ``representation`` parameters (batch_size: samples per chunk, device).

    Returns:
        ``{layer: (d, d) float64}`` with metadata (stats_model_sha256, n_samples). Under
        ``torchrun`` the processes share the chunks; the bytes are those of one process.
    """
    size = params["batch_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"representation.batch_size must be a positive integer, got {size!r}")
    device = resolve_device(params["device"])
    train = split_set(SampleSet.from_tensors(samples.tensors), index, "train")
    stats = collect_representations_sharded(model, train, chunk_size=size, device=device)
    for name, r in stats.items():
        logger.info("R[%s]: %d x %d", name, r.shape[0], r.shape[1])
    meta = {"stats_model_sha256": model_hash(model), "n_samples": len(train), "state": "original"}
    return TensorBundle(stats, meta)
