"""Nodes of the ``train`` pipeline: thin wrappers over ``pgu.core.training``."""

from __future__ import annotations

import logging

import pandas as pd
from matplotlib.figure import Figure
from torch import nn

from pgu.core import plots
from pgu.core.checkpoint import TensorBundle, model_hash, model_spec
from pgu.core.data import SampleSet, excluded_train_ids, split_set
from pgu.core.training import (
    TrainRecipe,
    accuracy_and_loss,
    fit_from_scratch,
    resolve_device,
)

logger = logging.getLogger(__name__)


def train_original(
    samples: TensorBundle, index: pd.DataFrame, model_params: dict, train_params: dict
) -> tuple[nn.Module, list[dict]]:
    """Train the configured model on the train split, minus ``train.exclude_sample_ids``.

    Args:
        samples: the sample bundle of the data pipeline.
        index: the sample index table.
        model_params: ``model`` parameters (registry name and constructor kwargs).
        train_params: ``train`` parameters (device, recipe, exclude_sample_ids).

    Returns:
        (trained model, per-epoch history).
    """
    data = SampleSet.from_tensors(samples.tensors)
    excluded = excluded_train_ids(index, train_params.get("exclude_sample_ids"))
    train = split_set(data, index, "train").without_ids(excluded.tolist())
    val = split_set(data, index, "val")
    spec = model_spec(
        model_params["name"], data.in_shape, data.num_classes, **(model_params.get("kwargs") or {})
    )
    recipe = TrainRecipe.from_params(train_params["recipe"])
    logger.info("training %s on %d samples for %d epochs", spec["name"], len(train), recipe.epochs)
    model, history = fit_from_scratch(
        spec, train, recipe, val=val, device=resolve_device(train_params["device"])
    )
    return model, history


def evaluate_original(
    model: nn.Module, samples: TensorBundle, index: pd.DataFrame, train_params: dict | None = None
) -> dict:
    """Accuracy and loss of the trained model on every split, plus its content hash.

    Args:
        model: the trained model.
        samples: the sample bundle.
        index: the sample index table.
        train_params: ``train`` parameters, for ``device`` (default: the CPU).
    """
    data = SampleSet.from_tensors(samples.tensors)
    device = resolve_device((train_params or {}).get("device", "cpu"))
    metrics: dict = {"model_sha256": model_hash(model)}
    for split in ("train", "val", "test"):
        acc, loss = accuracy_and_loss(model, split_set(data, index, split), device=device)
        metrics[f"{split}_acc"], metrics[f"{split}_loss"] = acc, loss
    logger.info("original model: test accuracy %.4f", metrics["test_acc"])
    return metrics


def plot_learning_curve(history: list[dict]) -> Figure:
    """Learning curve of the original model."""
    return plots.learning_curve(history, title="original model")
