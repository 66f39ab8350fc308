"""Nodes of the ``representation`` pipeline: a thin wrapper over ``pgu.core.representation``."""

from __future__ import annotations

import logging

import pandas as pd
from torch import nn

from pgu.core.checkpoint import TensorBundle, model_hash
from pgu.core.data import SampleSet, data_fingerprint, excluded_train_ids, split_set
from pgu.core.representation import collect_representations_sharded
from pgu.core.state import Workspace, check_statistics_not_purged
from pgu.core.training import resolve_device

logger = logging.getLogger(__name__)


def collect_full_statistics(
    model: nn.Module,
    samples: TensorBundle,
    index: pd.DataFrame,
    params: dict,
    train_params: dict | None = None,
    workspace: Workspace | None = None,
) -> TensorBundle:
    """R_l = Σ a aᵀ per Conv2d/Linear layer over the samples the model trained on, once.

    Args:
        model: the original model (its hash is stored with the matrices: requests must compute
            their forget statistics with this same model for R_full − R_forget to be exact).
        samples: the sample bundle.
        index: the sample index table.
        params: ``representation`` parameters (batch_size: samples per chunk, device).
        train_params: ``train`` parameters: the train split minus ``exclude_sample_ids`` is
            what the model trained on, so what R_full sums.
        workspace: the request workspace: R_full that `pgu-admin purge` deleted while request
            states exist is not collected again (it would sum the samples they removed).

    Returns:
        ``{layer: (d, d) float64}`` with metadata: stats_model_sha256, n_samples,
        excluded_sample_ids and data_sha256 (the fingerprint of the sample bundle and index,
        which every request checks its data against). Under ``torchrun`` the processes share
        the chunks; the bytes are those of one process.
    """
    if workspace is not None:
        check_statistics_not_purged(workspace.states)
    size = params["batch_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"representation.batch_size must be a positive integer, got {size!r}")
    excluded = excluded_train_ids(index, (train_params or {}).get("exclude_sample_ids"))
    device = resolve_device(params["device"])
    train = split_set(SampleSet.from_tensors(samples.tensors), index, "train")
    train = train.without_ids(excluded.tolist())
    stats = collect_representations_sharded(model, train, chunk_size=size, device=device)
    for name, r in stats.items():
        logger.info("R[%s]: %d x %d", name, r.shape[0], r.shape[1])
    meta = {
        "stats_model_sha256": model_hash(model),
        "n_samples": len(train),
        "state": "original",
        "excluded_sample_ids": excluded.tolist(),
        "data_sha256": data_fingerprint(samples.tensors, index),
    }
    return TensorBundle(stats, meta)
