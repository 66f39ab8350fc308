"""The ablation: PGU's loss, loop and stopping rule, with nothing projected out."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from pgu.core.representation import layer_dim, tracked_layers
from pgu.core.unlearning import unlearn

if TYPE_CHECKING:
    from pgu.core.baselines import BaselineContext


def empty_bases(model: nn.Module) -> dict[str, Tensor]:
    """A (d, 0) basis per tracked layer: every conv/linear weight is updated unprojected."""
    return {name: torch.zeros(layer_dim(layer), 0) for name, layer in tracked_layers(model).items()}


def run(model: nn.Module, ctx: BaselineContext) -> nn.Module:
    """PGU without the projection."""
    return unlearn(
        model,
        empty_bases(model),
        ctx.forget,
        ctx.val,
        ctx.config,
        ctx.forget_classes,
        ctx.device,
        original=ctx.original,
    ).model
