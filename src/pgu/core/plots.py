"""Matplotlib figures for people who would rather look than read tables.

Every function returns a ``matplotlib.figure.Figure`` and never shows or saves it: Kedro's
``MatplotlibDataset`` saves them, and Kedro-Viz previews them.
"""

from __future__ import annotations

import io
import math
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


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """Render ``fig`` to PNG bytes without a timestamp or version stamp, then close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def unlearning_curve(
    history: Sequence[Mapping[str, float]], title: str = "", kept_epoch: int | None = None
) -> Figure:
    """Forget and val accuracy per unlearning epoch, and the loop's objective.

    The lines follow the epochs the loop went on from; a try undone by a backtrack (``accepted``
    false: the epoch was run again with half the step) is a cross off the line, so the path does
    not zigzag back. ``kept_epoch``, the epoch whose weights the request returned, is a dotted
    vertical line: a guard or an overshoot keeps an earlier epoch than the last one run.

    The right panel is the history's ``loss``: the objective the loop descends, averaged over
    the forget set during the epoch. It is not the forget set's cross-entropy (``forget_loss``),
    which rises while the objective falls.
    """
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(9, 3.5))
    path = [h for h in history if h.get("accepted", True)]
    undone = [h for h in history if not h.get("accepted", True)]

    def values(records: list, key: str, factor: float) -> list[float]:  # JSON's null: a gap
        return [math.nan if h[key] is None else factor * h[key] for h in records]

    def draw(ax: plt.Axes, key: str, factor: float, label: str | None) -> None:
        (line,) = ax.plot(
            [h["epoch"] for h in path], values(path, key, factor), marker=".", label=label
        )
        if undone:
            ax.plot(
                [h["epoch"] for h in undone],
                values(undone, key, factor),
                linestyle="none",
                marker="x",
                color=line.get_color(),
                alpha=0.6,
            )

    for key, label in (
        ("forget_acc", "forget set"),
        ("val_acc", "val"),
        ("forget_class_val_acc", "forgotten classes (val)"),
        ("other_val_acc", "other classes (val)"),
    ):
        if history and key in history[0]:
            draw(ax_acc, key, 100.0, label)
    if history and "loss" in history[0]:
        draw(ax_loss, "loss", 1.0, None)
    if undone:  # one legend entry for every cross
        ax_acc.plot([], [], linestyle="none", marker="x", color="grey", label="undone try")
    if kept_epoch is not None:
        for ax in (ax_acc, ax_loss):
            ax.axvline(kept_epoch, color="grey", linestyle=":", linewidth=1)
        ax_acc.plot([], [], color="grey", linestyle=":", label=f"returned: epoch {kept_epoch}")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title=f"{title} unlearning".strip())
    ax_loss.set(
        xlabel="epoch",
        ylabel="objective",
        title="unlearning objective (mean over the forget set)",
    )
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
    ax_acc.legend()
    fig.tight_layout()
    return fig


def spectra(
    layers: Sequence[Mapping],
    title: str = "retain statistics",
    order: Sequence[str] | None = None,
) -> Figure:
    """Normalised singular values per layer with the γ cut (k) marked.

    Panels follow ``layers``, or ``order`` (layer names, e.g. the model's tracked-layer order:
    statistics read back from a file come in alphabetical order) with unnamed layers after it.
    Every x-axis starts at index 1 (σ₁).
    """
    if order is not None:
        rank = {name: i for i, name in enumerate(order)}
        layers = sorted(layers, key=lambda layer: rank.get(layer["layer"], len(rank)))
    n = max(len(layers), 1)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, layer in zip(axes.ravel(), layers, strict=False):
        sigma = list(layer["sigma"])
        top = sigma[0] if sigma and sigma[0] > 0 else 1.0
        ax.semilogy(range(1, len(sigma) + 1), [max(s / top, 1e-12) for s in sigma], lw=1)
        ax.axvline(layer["k"], color="tab:red", ls="--", lw=1, label=f"k={layer['k']}")
        ax.set_xlim(1, max(len(sigma), 2))
        ax.set_title(f"{layer['layer']} (γ={layer['gamma']:.2f})", fontsize=8)
        ax.set_xlabel("index", fontsize=7)
        ax.tick_params(which="both", labelsize=7)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(layers) :]:
        ax.axis("off")
    fig.suptitle(f"{title}: σ / σ₁ and the core-gradient-space cut", fontsize=9)
    fig.tight_layout()
    return fig


def entropy_histograms(entropies: Mapping[str, Sequence[float]], title: str = "") -> Figure:
    """Histograms of log10 output entropy on the forget set, one outline per model."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.5))
    values = {
        k: np.log10(np.clip(np.asarray(v, dtype=float), 1e-12, None)) for k, v in entropies.items()
    }
    lo = min((v.min() for v in values.values() if v.size), default=-12)
    hi = max((v.max() for v in values.values() if v.size), default=0)
    bins = np.linspace(lo, hi + 1e-9, 30)
    for name, v in values.items():
        ax.hist(v, bins=bins, histtype="step", lw=1.5, label=name)
    ax.set(xlabel="log10 entropy of the softmax (nats)", ylabel="forget samples", title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def method_bars(
    values: Mapping[str, float],
    ylabel: str,
    title: str = "",
    ideal: float | None = None,
    percent: bool = True,
) -> Figure:
    """One bar per method (e.g. the attack's member rate on the forget set).

    Fractions are drawn in percent, or with ``percent=False`` as they are (0-1, e.g. an AUC,
    as the report's tables give it). ``ideal`` (a fraction) draws a dashed line where a perfect
    method's bar would end.
    """
    scale, fmt = (100, ".1f") if percent else (1, ".3f")
    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = list(values)
    heights = [scale * values[n] for n in names]
    ax.bar(names, heights, color="tab:blue")
    for i, h in enumerate(heights):
        ax.text(i, h, f"{h:{fmt}}", ha="center", va="bottom", fontsize=8)
    if ideal is not None:
        ax.axhline(scale * ideal, color="k", linestyle="--", linewidth=1, label="ideal")
        ax.legend(fontsize=8)
    ax.set(ylabel=ylabel, title=title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def message(text: str, title: str = "") -> Figure:
    """A figure that only says ``text`` (where a plot is declared but has nothing to show)."""
    fig, ax = plt.subplots(figsize=(6, 1.6))
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    ax.set_title(title)
    fig.tight_layout()
    return fig
