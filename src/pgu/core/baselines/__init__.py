"""Baselines: what a practitioner would do instead of PGU, run on the same request.

Every baseline has the same interface, ``run(model, ctx) -> nn.Module``, returns an updated
copy and leaves its input untouched. NG, RL and the no-projection ablation use PGU's own loop
(the same epoch budget, step calibration and stopping rule) with another loss or without the
projection, so the comparison isolates what the loss and the projection buy. FT needs the
retain data, which PGU does not: that is the point of comparing against it.

- ``ft``: fine-tune on the retain set (catastrophic forgetting of the forget set).
- ``ng``: negative gradient — gradient ascent on the cross-entropy of the forget set.
- ``rl``: random labels — descend the cross-entropy towards a random wrong label per sample.
- ``no_projection``: the PGU loss with every layer's basis empty (the ablation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pgu.core.baselines import finetune, negative_gradient, no_projection, random_labels
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


BASELINES: dict[str, Callable[[nn.Module, BaselineContext], nn.Module]] = {
    "ft": finetune.run,
    "ng": negative_gradient.run,
    "rl": random_labels.run,
    "no_projection": no_projection.run,
}
NEEDS_RETAIN = frozenset({"ft"})


def run_baseline(name: str, model: nn.Module, ctx: BaselineContext) -> nn.Module:
    """Run baseline ``name`` on a copy of ``model``."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; valid: {sorted(BASELINES)}")
    if name in NEEDS_RETAIN and ctx.retain is None:
        raise ValueError(f"baseline {name!r} needs the retain samples")
    return BASELINES[name](model, ctx)
