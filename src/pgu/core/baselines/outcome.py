"""What a baseline is given (:class:`BaselineContext`) and what it gives back
(:class:`BaselineOutcome`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pgu.core.data import SampleSet
from pgu.core.training import TrainRecipe
from pgu.core.unlearning import UnlearnConfig


@dataclass(frozen=True)
class BaselineContext:
    """Everything a baseline may use for one request."""

    forget: SampleSet
    val: SampleSet
    retain: SampleSet | None  # only given to baselines that need it (FT)
    config: UnlearnConfig
    forget_classes: Sequence[int] | None
    device: torch.device
    finetune_recipe: TrainRecipe
    # the original model when ``model`` is an earlier request's result: the reference of the
    # unlearning loop's target and guards (UnlearnConfig.reference); None on the original
    original: nn.Module | None = None


@dataclass(frozen=True)
class BaselineOutcome:
    """A baseline's model and how its run ended, in words for the report (e.g. "`guard` after
    3 epochs", "3 epochs of fine-tuning on the retain set")."""

    model: nn.Module
    stopped: str
