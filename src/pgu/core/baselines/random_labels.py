"""RL: train the forget samples towards a random wrong label each, without projection."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pgu.core.baselines.no_projection import unprojected

if TYPE_CHECKING:
    from pgu.core.baselines.outcome import BaselineContext, BaselineOutcome

_MIX = 0x9E3779B1  # odd multiplier: a fixed, well-spread pseudo-random offset per sample id


def wrong_labels(y: Tensor, sample_id: Tensor, num_classes: int, seed: int = 0) -> Tensor:
    """A label ≠ y per sample, fixed by the sample id and the seed: (B,) int64."""
    offset = 1 + ((sample_id * _MIX + seed) % (num_classes - 1))  # in [1, C − 1]
    return (y + offset) % num_classes


def run(model: nn.Module, ctx: BaselineContext) -> BaselineOutcome:
    """PGU's loop and stopping rule with cross-entropy towards random wrong labels."""
    num_classes = ctx.forget.num_classes
    seed = ctx.config.seed

    def loss(logits: Tensor, y: Tensor, sample_id: Tensor) -> Tensor:
        return F.cross_entropy(logits, wrong_labels(y, sample_id, num_classes, seed))

    torch.manual_seed(seed)
    return unprojected(model, ctx, loss)
