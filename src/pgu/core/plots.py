"""Matplotlib figures for people who would rather look than read tables.

Every function returns a ``matplotlib.figure.Figure`` and never shows or saves it: Kedro's
``MatplotlibDataset`` saves them, and Kedro-Viz previews them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def learning_curve(history: Sequence[Mapping[str, float]], title: str = "training") -> Figure:
    """Accuracy and loss per epoch (train, and val when recorded)."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, style in (("train", "-"), ("val", "--")):
        if history and f"{key}_acc" in history[0]:
            ax_acc.plot(epochs, [100 * h[f"{key}_acc"] for h in history], style, label=key)
            ax_loss.plot(epochs, [h[f"{key}_loss"] for h in history], style, label=key)
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title=f"{title}: accuracy")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title=f"{title}: loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig
