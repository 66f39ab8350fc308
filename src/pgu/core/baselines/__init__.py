"""Baselines: what a practitioner would do instead of PGU, run on the same request.

Every baseline has the same interface, ``run(model, ctx) -> BaselineOutcome``: an updated copy
(its input is left untouched) and how its run ended, for the report. NG, RL and the
no-projection ablation use PGU's own loop (the same epoch budget, step calibration and stopping
rule) with another loss or without the projection, so the comparison isolates what the loss and
the projection buy. FT needs the retain data, which PGU does not: that is the point of
comparing against it.

- ``ft``: fine-tune on the retain set (catastrophic forgetting of the forget set).
- ``ng``: negative gradient — gradient ascent on the cross-entropy of the forget set.
- ``rl``: random labels — descend the cross-entropy towards a random wrong label per sample.
- ``no_projection``: the PGU loss with every layer's basis empty (the ablation).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from pgu.core.baselines import finetune, negative_gradient, no_projection, random_labels
from pgu.core.baselines.outcome import BaselineContext, BaselineOutcome

__all__ = ["BASELINES", "NEEDS_RETAIN", "BaselineContext", "BaselineOutcome", "run_baseline"]

BASELINES: dict[str, Callable[[nn.Module, BaselineContext], BaselineOutcome]] = {
    "ft": finetune.run,
    "ng": negative_gradient.run,
    "rl": random_labels.run,
    "no_projection": no_projection.run,
}
NEEDS_RETAIN = frozenset({"ft"})


def run_baseline(name: str, model: nn.Module, ctx: BaselineContext) -> BaselineOutcome:
    """Run baseline ``name`` on a copy of ``model``."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; valid: {sorted(BASELINES)}")
    if name in NEEDS_RETAIN and ctx.retain is None:
        raise ValueError(f"baseline {name!r} needs the retain samples")
    return BASELINES[name](model, ctx)
