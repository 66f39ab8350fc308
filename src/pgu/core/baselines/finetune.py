"""FT: fine-tune on the retain set only, hoping the forget set is forgotten on the way.

Needs the retain data, which PGU does not. Uses the project's training loop (SGD with momentum,
exponential decay) with the ``finetune_recipe`` (a few epochs at a small learning rate).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from pgu.core.baselines.outcome import BaselineContext, BaselineOutcome
from pgu.core.training import train_model


def run(model: nn.Module, ctx: BaselineContext) -> BaselineOutcome:
    """Fine-tune a copy of ``model`` on ``ctx.retain``.

    Dropout draws from torch's global generator, which whatever ran before (a gold standard
    trained or read from its cache, earlier audits) leaves in another state: it is seeded here
    from the recipe, inside a fork, so the result is the same bytes either way.
    """
    out = copy.deepcopy(model)
    cuda = [ctx.device] if torch.device(ctx.device).type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(ctx.finetune_recipe.seed)
        train_model(out, ctx.retain, ctx.finetune_recipe, device=ctx.device)
    epochs = ctx.finetune_recipe.epochs
    stopped = f"{epochs} epoch{'' if epochs == 1 else 's'} of fine-tuning on the retain set"
    return BaselineOutcome(out.cpu().eval(), stopped)
