"""NG: gradient ascent on the forget set's cross-entropy, without projection."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch.nn.functional as F
from torch import Tensor, nn

from pgu.core.baselines.no_projection import empty_bases
from pgu.core.unlearning import unlearn

if TYPE_CHECKING:
    from pgu.core.baselines import BaselineContext


def loss(logits: Tensor, y: Tensor, sample_id: Tensor) -> Tensor:
    """−CE(logits, y): minimising it pushes the true label's probability down."""
    return -F.cross_entropy(logits, y)


def run(model: nn.Module, ctx: BaselineContext) -> nn.Module:
    """PGU's loop and stopping rule with the negative cross-entropy and no projection."""
    bases = empty_bases(model)
    return unlearn(
        model,
        bases,
        ctx.forget,
        ctx.val,
        ctx.config,
        ctx.forget_classes,
        ctx.device,
        loss_fn=loss,
        original=ctx.original,
    ).model
