"""NG: gradient ascent on the forget set's cross-entropy, without projection."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

from pgu.core.baselines.no_projection import unprojected

if TYPE_CHECKING:
    from pgu.core.baselines.outcome import BaselineContext, BaselineOutcome


def loss(logits: Tensor, y: Tensor, sample_id: Tensor) -> Tensor:
    """−CE(logits, y): minimising it pushes the true label's probability down."""
    return -F.cross_entropy(logits, y)


def run(model: nn.Module, ctx: BaselineContext) -> BaselineOutcome:
    """PGU's loop and stopping rule with the negative cross-entropy and no projection."""
    return unprojected(model, ctx, loss)
