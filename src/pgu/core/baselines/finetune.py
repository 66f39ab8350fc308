"""FT: fine-tune on the retain set only, hoping the forget set is forgotten on the way.

Needs the retain data, which PGU does not. Uses the project's training loop (SGD with momentum,
exponential decay) with the ``finetune_recipe`` (a few epochs at a small learning rate).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from torch import nn

from pgu.core.training import train_model

if TYPE_CHECKING:
    from pgu.core.baselines import BaselineContext


def run(model: nn.Module, ctx: BaselineContext) -> nn.Module:
    """Fine-tune a copy of ``model`` on ``ctx.retain``."""
    out = copy.deepcopy(model)
    train_model(out, ctx.retain, ctx.finetune_recipe, device=ctx.device)
    return out.cpu().eval()
