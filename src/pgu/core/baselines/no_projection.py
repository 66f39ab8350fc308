"""The ablation: PGU's loss, loop and stopping rule, with nothing projected out."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pgu.core.baselines.outcome import BaselineContext, BaselineOutcome
from pgu.core.representation import layer_dim, tracked_layers
from pgu.core.unlearning import LossFn, unlearn


def empty_bases(model: nn.Module) -> dict[str, Tensor]:
    """A (d, 0) basis per tracked layer: every conv/linear weight is updated unprojected."""
    return {name: torch.zeros(layer_dim(layer), 0) for name, layer in tracked_layers(model).items()}


def unprojected(
    model: nn.Module, ctx: BaselineContext, loss_fn: LossFn | None = None
) -> BaselineOutcome:
    """PGU's loop, step and stopping rule on ``ctx``'s request with nothing projected out, with
    PGU's loss or ``loss_fn``: the shared body of the unprojected baselines."""
    result = unlearn(
        model,
        empty_bases(model),
        ctx.forget,
        ctx.val,
        ctx.config,
        ctx.forget_classes,
        ctx.device,
        loss_fn=loss_fn,
        original=ctx.original,
    )
    epochs = f"{result.epochs_run} epoch{'' if result.epochs_run == 1 else 's'}"
    kept = "" if result.kept_epoch == result.epochs_run else f", kept epoch {result.kept_epoch}"
    return BaselineOutcome(result.model, f"`{result.stop_reason}` after {epochs}{kept}")


def run(model: nn.Module, ctx: BaselineContext) -> BaselineOutcome:
    """PGU without the projection."""
    return unprojected(model, ctx)
