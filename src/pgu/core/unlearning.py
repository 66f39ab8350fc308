"""The PGU unlearning loop (METHOD.md sections 4-6): projected descent on the forget set.

``unlearn(model, bases, forget, val, config)`` returns an unlearned copy of ``model``. Each
epoch is one shuffled pass over the forget samples that minimises ``unlearning_loss`` by plain
SGD (no momentum, no weight decay) on the weights of the layers that have a CGS basis, each
gradient first projected onto the Residual Gradient Space. The model stays in eval mode
(BatchNorm statistics frozen, dropout off). After every epoch the model is evaluated on the
forget samples and the validation split only: the retain/train data is never used, neither
for the updates nor for calibrating the step or deciding when to stop.

Where this loop departs from the paper's reference code (METHOD.md section 6):

**Self-calibrating step** (``step="calibrated"``, the default). Each step moves every updated
layer l by the same *relative* amount, whatever the size of its gradient:

    W_l <- W_l - (eta_e * s / B) * ||W_l|| / ||P(G_l)|| * P(G_l)

with P(G_l) the projected gradient, ||W_l|| the layer's Frobenius norm at the start of the
epoch, B the number of batches per epoch and s the calibration scale. So ``lr_start`` /
``lr_end`` are fractions of the weights' norm that one epoch may move each layer, independent
of the forget-set size and of the loss scale (the unlearning loss saturates on confidently
memorised samples, so raw gradients differ by orders of magnitude between data sets: that is
why the paper's fixed rate does nothing on some and overshoots on others). A layer whose
gradient lies in its CGS up to round-off (||P(G)|| <= ``NULL_GRADIENT`` * ||G||) is not
moved. The scale s starts at 1 and follows a trust-region rule. When an epoch overshoots the
target (see below), its weights are discarded, s is halved and the epoch is redone from the
previous weights. When an epoch falls short of the target at its first try, s is doubled for
the next one, up to 1; an epoch accepted only after halving keeps the halved s. So the step
shrinks near the target and recovers away from it, rather than crawling on after one noisy
overshoot. At most ``max_backtracks`` epochs are redone in a whole run, so a run costs at most
``epochs + max_backtracks`` passes and evaluations.

**Stopping** (evaluated after every epoch; every threshold is a config field):

- *samples* (``forget_classes`` None, random-sample removal): a model retrained without the
  forget samples treats them like held-out data, so the target is a forget set that looks like
  the validation split (V's metrics are the reference's, below). With
  ``sample_measure="loss"`` (default) the gap is g = ln(loss(D_f) / loss(V)) of the mean
  cross-entropies: a continuous version of the paper's acc(V) - acc(D_f) that still moves
  when the original is already ~99% accurate on held-out data and the accuracy gap is one or
  two samples. With ``"log_loss"`` it is
  g = mean ln loss_i(D_f) - mean ln loss_i(V), the gap between the mean per-sample log-losses
  (the scale a membership attack reads them on: a mean is ruled by the few misclassified
  samples, a mean of logs by the typical one). With ``"accuracy"`` the gap is
  g = acc(V) - acc(D_f). The target is reached when g >= -``sample_tolerance`` and overshot
  when g > +``sample_tolerance``, or when the validation accuracy falls more than
  ``sample_guard_drop`` below the reference's (the guard: without it a collapsed model,
  equally bad on forget and val, would meet a loss-only target).
- *classes* (``forget_classes`` given): reached when the accuracy on the forget samples and
  on the validation samples of the forgotten classes are both <= ``class_target_acc``. An
  epoch after which the validation accuracy on the other classes is more than
  ``class_guard_drop`` below the reference's breaks the guard: an overshoot.

*Reference* (``reference``, default "original"). The validation metrics that the samples gap
and both guards read are fixed for the run: the original model's, which the loop is given when a
request starts from an earlier request's model, else the start model's before its first epoch.
A model retrained without the forget samples treats them like held-out data, and its held-out
loss and accuracy are about the original's, whatever was deleted before. The current model's
move with the damage unlearning does: a target read from them asks for more forgetting the
more damage is done, so damage feeds itself, most of all over a chain of requests, and a guard
relative to each request's start would allow ``sample_guard_drop`` per request instead of in
all. A request whose start model already breaks a guard stops at once ("guard_at_start"):
only retraining can repair that. ``"current"`` is the loop's earlier rule: the gap reads each
epoch's own validation metrics, the guards the start model's.

**Forgotten classes' output rows** (classes mode, ``class_free_rows``, default on). The rows of
the output layer (:func:`output_layer`: the last ``nn.Linear`` with one output per class, or a
final conv with one output channel per class) that belong to the forgotten classes are updated
without projection; every other row, and every other layer, is projected as usual. Projection
keeps a layer's response to the retained inputs, but here that response is exactly what a
retrained model changes: without the class, nothing is ever predicted as it. Lowering those
logits cannot turn a correct prediction of a retained sample (whose label is never a forgotten
class) into a wrong one, and it spares the hidden layers most of the work (measured on CIFAR-10,
README: with projected rows the guard stopped the run at 6% forget-class accuracy). The biases
stay fixed, as in METHOD.md section 5.

**Sample loss** (samples mode, ``sample_loss``). ``"pgu"`` (default) minimises METHOD's
``unlearning_loss``, which raises every forget sample's loss alike: at the forget accuracy of a
retrained model the forget set is flatter than that model's, and a membership attack calls
fewer of its samples members (measured on CIFAR-10, README). ``"quantile"`` (an option, not
METHOD's) minimises ``quantile_loss`` instead: each forget sample's loss is drawn towards the
held-out loss of the same rank (``quantile_targets``: the start model's losses on the forget
set ranked against the reference model's on the validation split; never below the sample's
own start loss), so the samples a model would get right without training on them stay
confident while the rest are unlearned.

The loop stops at the first epoch that reaches the target and keeps it. If an overshoot
persists after the last backtrack (or at once with ``step="fixed"``), samples mode keeps
whichever of that epoch and the previous one is closer to the target (|g|, ties to the later
one), classes mode keeps the previous epoch. When the budget runs out, the epoch closest to
the target is kept (samples: smallest |g|; classes: lowest forget-class accuracy). Endings
that keep the original weights or miss the target are named in ``stop_reason`` and logged as
WARNINGs, so the unchanged model is never returned silently.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from pgu.core.data import SampleSet
from pgu.core.losses import quantile_loss, quantile_targets, unlearning_loss
from pgu.core.params import from_params
from pgu.core.projection import project_gradients, projected_parameters
from pgu.core.representation import tracked_layers
from pgu.core.training import predict_logits

logger = logging.getLogger(__name__)

STEPS = ("calibrated", "fixed")
SAMPLE_MEASURES = ("loss", "log_loss", "accuracy")
SAMPLE_LOSSES = ("pgu", "quantile")
REFERENCES = ("original", "current")

# A projected gradient smaller than this fraction of the raw one is round-off of a gradient
# that lies in the CGS; normalising it to a full-size step would amplify noise.
NULL_GRADIENT = 1e-6

# Floor on mean losses before the log-ratio, so a model with a loss of exactly 0 is still valid.
LOSS_FLOOR = 1e-12

# Floor on per-sample losses before their logarithm (``sample_measure="log_loss"``): a sample
# predicted with float32 certainty has a loss of exactly 0.
LOG_LOSS_FLOOR = 1e-8

# Slack on the stopping rule's comparisons (accuracies, the samples band), so that e.g. 0.01
# computed as 0.010000000000000002 counts.
ACC_SLACK = 1e-12

# Evaluation runs without gradients, so it can use larger batches than the updates.
EVAL_BATCH = 512

# Reasons that mean the target was not reached; they are logged as warnings.
MISSED = (
    "target_at_start",
    "past_target_at_start",
    "guard_at_start",
    "overshoot",
    "guard",
    "budget_exhausted",
    "no_trainable_layers",
)


@dataclass(frozen=True)
class UnlearnConfig:
    """Hyper-parameters and stopping rule of one unlearning run.

    Attributes:
        epochs: epoch budget E (passes over the forget set).
        lr_start: learning rate of the first epoch. ``step="calibrated"``: the fraction of
            each layer's weight norm one epoch moves it (times the calibration scale);
            ``step="fixed"``: the plain SGD rate (the paper's: 0.05 -> 0.01).
        lr_end: the rate the exponential decay eta_e = lr_start * (lr_end / lr_start)^(e / E),
            e = 0 .. E - 1, approaches at the end of the budget.
        step: "calibrated" (relative per-layer step, halved and redone on overshoot) or
            "fixed" (the paper's plain SGD step eta_e * P(G), never re-scaled).
        delta: offset of the forget term -log(1 - (p_y - delta)).
        w_forget: weight of the forget term.
        w_entropy: weight of the negative-entropy term.
        batch_size: forget samples per step.
        sample_measure: samples mode: how "the forget set looks like validation" is measured,
            "loss" (log-ratio of mean cross-entropies), "log_loss" (difference of mean
            per-sample log cross-entropies) or "accuracy" (acc(V) - acc(D_f)).
        sample_loss: samples mode: what the descent minimises, "pgu" (METHOD's
            ``unlearning_loss``) or "quantile" (``quantile_loss``; see the module docstring).
        sample_tolerance: samples mode: half-width of the target band around a zero gap, in
            the unit of ``sample_measure`` (natural logs, or accuracy as a fraction).
        sample_guard_drop: samples mode: how far (a fraction) the validation accuracy may
            fall below the reference's (see ``reference``); an epoch that breaks this guard
            counts as an overshoot (a loss-only target would accept a collapsed model whose
            forget and val losses are equally bad).
        class_target_acc: classes mode: the accuracy, on the forget samples and on the
            validation samples of the forgotten classes, at or below which the target is met.
        class_guard_drop: classes mode: how far (a fraction) the validation accuracy on the
            other classes may fall below the reference's (see ``reference``).
        class_free_rows: classes mode: update the output layer's rows of the forgotten
            classes without projection (see the module docstring).
        reference: which validation metrics the target and the guards read. "original":
            fixed ones, the original model's (given to :func:`unlearn`; else the start
            model's, before its first epoch). "current": the gap reads each epoch's own
            validation metrics and the guards the start model's (the loop's earlier rule).
        max_backtracks: calibrated step: how many overshooting epochs may be redone with a
            halved scale in the whole run; the next overshoot after that ends the run.
        seed: seeds the shuffling of the forget samples.
    """

    epochs: int = 30
    # Relative sizes, tuned on bench/quality.py (digits): class removal takes ~4 epochs and
    # random samples 1-2; a first step that is too large costs backtracks, not a bad model.
    lr_start: float = 0.15
    lr_end: float = 0.03
    step: str = "calibrated"
    delta: float = 0.05
    w_forget: float = 1.0
    w_entropy: float = 0.2
    batch_size: int = 64
    sample_measure: str = "loss"
    sample_loss: str = "pgu"
    sample_tolerance: float = 0.25
    sample_guard_drop: float = 0.05
    class_target_acc: float = 0.01
    class_guard_drop: float = 0.01
    class_free_rows: bool = True
    reference: str = "original"
    max_backtracks: int = 6
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.lr_start <= 0 or self.lr_end <= 0:
            raise ValueError(f"lr_start and lr_end must be > 0, got {self.lr_start}, {self.lr_end}")
        if self.step not in STEPS:
            raise ValueError(f"step must be one of {STEPS}, got {self.step!r}")
        if self.sample_measure not in SAMPLE_MEASURES:
            raise ValueError(
                f"sample_measure must be one of {SAMPLE_MEASURES}, got {self.sample_measure!r}"
            )
        if self.sample_loss not in SAMPLE_LOSSES:
            raise ValueError(
                f"sample_loss must be one of {SAMPLE_LOSSES}, got {self.sample_loss!r}"
            )
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if (
            min(
                self.sample_tolerance,
                self.sample_guard_drop,
                self.class_guard_drop,
                self.max_backtracks,
            )
            < 0
        ):
            raise ValueError(
                "sample_tolerance, sample_guard_drop, class_guard_drop and max_backtracks "
                "must be >= 0"
            )

    @classmethod
    def from_params(cls, params: Mapping) -> UnlearnConfig:
        """Build from a parameters dict, rejecting unknown keys with their names."""
        return from_params(cls, params, "unlearning")

    def lr(self, epoch: int) -> float:
        """eta_e = lr_start * (lr_end / lr_start) ** (e / E) for the epoch index e in [0, E)."""
        return self.lr_start * (self.lr_end / self.lr_start) ** (epoch / self.epochs)


@dataclass
class UnlearnResult:
    """Outcome of :func:`unlearn`.

    Attributes:
        model: the kept model: a copy, in eval mode, on the device it was unlearned on.
        history: one record per evaluated epoch try (see :func:`unlearn`).
        stop_reason: why the loop stopped (see :func:`unlearn`).
        epochs_run: epochs run (tries undone by a backtrack not counted). The last one counts
            even when the rule then keeps the epoch before it: ``kept_epoch`` says which.
        kept_epoch: the epoch whose weights ``model`` holds; 0 is the original.
        lr_scale: the calibration scale s of the last epoch try run (1.0 unless an
            overshoot halved it, or no epoch ran).
    """

    model: nn.Module
    history: list[dict]
    stop_reason: str
    epochs_run: int
    kept_epoch: int
    lr_scale: float

    def kept_record(self) -> dict:
        """The history record of the kept weights: their forget and val metrics."""
        return next(
            r for r in reversed(self.history) if r["epoch"] == self.kept_epoch and r["accepted"]
        )


# --- evaluation and the stopping rule -------------------------------------------------------


def _accuracy(logits: Tensor, y: Tensor) -> float:
    """Top-1 accuracy of logits (N, C) against labels (N,); NaN for an empty set."""
    return (logits.argmax(1) == y).double().mean().item() if len(y) else math.nan


def _mean_log_loss(logits: Tensor, y: Tensor) -> float:
    """Mean over samples of ln(cross-entropy), each loss floored at ``LOG_LOSS_FLOOR``."""
    losses = F.cross_entropy(logits, y, reduction="none")  # (N,)
    return losses.clamp_min(LOG_LOSS_FLOOR).log().mean().item() if len(y) else math.nan


def validation_metrics(
    model: nn.Module,
    val: SampleSet,
    forget_classes: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Accuracy, mean cross-entropy (nats) and mean log cross-entropy on the validation split.

    Returns:
        val_acc, val_loss, val_log_loss and, when ``forget_classes`` is given,
        forget_class_val_acc (validation samples of those classes; NaN if none) and
        other_val_acc (the other validation samples).
    """
    lv = predict_logits(model, val, EVAL_BATCH, device)  # (N_v, C) on the CPU
    yv = val.y.cpu()  # the set may live on the device
    out = {
        "val_acc": _accuracy(lv, yv),
        "val_loss": F.cross_entropy(lv, yv).item(),
        "val_log_loss": _mean_log_loss(lv, yv),
    }
    if forget_classes is not None:
        removed = torch.isin(yv, torch.tensor(list(forget_classes), dtype=yv.dtype))
        out["forget_class_val_acc"] = _accuracy(lv[removed], yv[removed])
        out["other_val_acc"] = _accuracy(lv[~removed], yv[~removed])
    return out


def evaluate_sets(
    model: nn.Module,
    forget: SampleSet,
    val: SampleSet,
    forget_classes: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """What the stopping rule looks at: accuracy and mean cross-entropy (nats) on both sets.

    Returns:
        forget_acc, forget_loss, forget_log_loss (mean ln of per-sample losses) and the keys
        of :func:`validation_metrics`.
    """
    lf = predict_logits(model, forget, EVAL_BATCH, device)  # (N_f, C) on the CPU
    yf = forget.y.cpu()
    return {
        "forget_acc": _accuracy(lf, yf),
        "forget_loss": F.cross_entropy(lf, yf).item(),
        "forget_log_loss": _mean_log_loss(lf, yf),
        **validation_metrics(model, val, forget_classes, device),
    }


def _assess(
    m: Mapping[str, float],
    start: Mapping[str, float],
    ref: Mapping[str, float],
    classes: bool,
    config: UnlearnConfig,
) -> tuple[str, float]:
    """Classify an evaluated epoch: "short" of the target, "hit" or "over"(shot).

    ``start`` and ``ref`` hold the validation metrics of the model the run started from and of
    the reference (the original model; the start model on a request from it).

    Returns:
        (status, distance): distance >= 0 ranks epochs by closeness to the target (samples:
        |gap|; classes: the larger of the two forget-class accuracies).
    """
    fixed = config.reference == "original"
    base = ref if fixed else start  # what the guards compare with
    held_out = ref if fixed else m  # the held-out side of the samples gap
    if not classes:
        if base["val_acc"] - m["val_acc"] > config.sample_guard_drop + ACC_SLACK:
            return "over", math.inf  # the guard: held-out accuracy must not collapse
        if config.sample_measure == "loss":
            ratio = max(m["forget_loss"], LOSS_FLOOR) / max(held_out["val_loss"], LOSS_FLOOR)
            gap = math.log(ratio)
        elif config.sample_measure == "log_loss":
            gap = m["forget_log_loss"] - held_out["val_log_loss"]
        else:
            gap = held_out["val_acc"] - m["forget_acc"]
        tol = config.sample_tolerance + ACC_SLACK
        return ("short" if gap < -tol else "over" if gap > tol else "hit"), abs(gap)
    if base["other_val_acc"] - m["other_val_acc"] > config.class_guard_drop + ACC_SLACK:
        return "over", math.inf
    val_acc = m["forget_class_val_acc"]
    dist = max(m["forget_acc"], 0.0 if math.isnan(val_acc) else val_acc)
    return ("hit" if dist <= config.class_target_acc + ACC_SLACK else "short"), dist


# --- one epoch ------------------------------------------------------------------------------

# A replacement loss: (logits (B, C), labels (B,), sample ids (B,)) -> scalar to minimise.
LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def _sample_losses(model: nn.Module, data: SampleSet, device: str | torch.device) -> Tensor:
    """(N,) per-sample cross-entropies (nats) of ``model`` on ``data``, on the CPU."""
    logits = predict_logits(model, data, EVAL_BATCH, device)  # (N, C)
    return F.cross_entropy(logits, data.y.cpu(), reduction="none")


def quantile_loss_fn(
    model: nn.Module,
    reference: nn.Module,
    forget: SampleSet,
    val: SampleSet,
    device: str | torch.device,
) -> LossFn:
    """``sample_loss="quantile"``: the loss function, with targets fixed at the start.

    Each forget sample's target is the validation loss, under ``reference``, of the rank its
    loss under ``model`` has in the forget set, or its own loss if that is higher
    (``pgu.core.losses.quantile_targets``).
    """
    targets = quantile_targets(
        _sample_losses(model, forget, device), _sample_losses(reference, val, device)
    )
    ids = forget.sample_id.to(device)
    order = torch.argsort(ids)  # (N_f,) to look sample ids up by binary search
    sorted_ids, targets = ids[order], targets.to(device)[order]

    def loss(logits: Tensor, y: Tensor, sample_id: Tensor) -> Tensor:
        at = torch.searchsorted(sorted_ids, sample_id)  # (B,)
        return quantile_loss(logits, y, targets[at])

    return loss


def _norms(tensors: list[Tensor]) -> Tensor:
    """(P,) float64 Euclidean norms of the tensors (each computed in its own dtype)."""
    return torch.stack(torch._foreach_norm(tensors)).double()


def _descent_step(
    model: nn.Module,
    params: list[nn.Parameter],
    bases: Mapping[str, Tensor],
    batch: tuple[Tensor, Tensor, Tensor | None],
    config: UnlearnConfig,
    lr: float | Tensor,
    w_norms: Tensor | None,
    n_batches: int,
    loss_fn: LossFn | None,
    free_rows: tuple[nn.Parameter, Tensor] | None,
) -> Tensor:
    """One batch of projected descent, in place on ``params``; returns the batch's loss (0-d).

    ``batch`` = (inputs (B, ...), labels (B,), sample ids (B,) or None without ``loss_fn``).
    ``lr`` may be a 0-d float64 tensor (the captured graph's; the same arithmetic) with the
    calibrated step; ``w_norms`` (P,) are the weights' norms at the start of the epoch. No host
    synchronisation, so a CUDA graph can capture it (:class:`CapturedStep`).
    """
    x, y, ids = batch
    for p in params:
        p.grad = None
    logits = model(x)  # (B, C)
    if loss_fn is None:
        loss = unlearning_loss(logits, y, config.delta, config.w_forget, config.w_entropy)
    else:
        loss = loss_fn(logits, y, ids)
    loss.backward()
    kept = free_rows[0].grad[free_rows[1]].clone() if free_rows is not None else None
    calibrated = w_norms is not None
    raw = _norms([p.grad for p in params]) if calibrated else None  # (P,)
    project_gradients(model, bases)
    if kept is not None:
        free_rows[0].grad[free_rows[1]] = kept
    with torch.no_grad():
        if calibrated:
            g_norms = _norms([p.grad for p in params])  # (P,)
            # (lr / B) * ||W|| / ||P(G)||, or 0 for a gradient that lies in the CGS
            steps = torch.where(
                g_norms > NULL_GRADIENT * raw,
                (lr / n_batches) * w_norms / g_norms,
                torch.zeros_like(g_norms),
            )
            for p, step in zip(params, steps.to(params[0].dtype).unbind(), strict=True):
                p.sub_(p.grad * step.to(p.dtype))
        else:
            for p in params:
                p.add_(p.grad, alpha=-lr)
    return loss.detach()


class CapturedStep:
    """:func:`_descent_step` on full batches, captured once as a CUDA graph and replayed.

    Eager PyTorch spends ~20 us of host time on each kernel it launches, and a SmallVGG batch of
    64 launches ~157 kernels for ~1.6 ms of GPU work (H200, ``bench/profile_request.py``): an
    epoch waits on the host. A replay launches the whole batch at once. The batch, the rate and
    the weight norms live in static device buffers that each call overwrites; the weights are
    updated in place, so an undone epoch (weights copied back) needs no new capture. Only the
    calibrated step, and only full batches (the last, shorter one runs eagerly).

    Experimental (``unlearn(..., cuda_graph=True)``, off by default): not yet run on a GPU.
    ``tests/core/test_unlearning.py`` compares it with the eager loop where CUDA is present.
    """

    def __init__(
        self,
        step: Callable[[tuple[Tensor, Tensor, Tensor | None], Tensor, Tensor], Tensor],
        params: list[nn.Parameter],
        batch: tuple[Tensor, Tensor, Tensor | None],
        device: torch.device,
    ) -> None:
        self.batch = tuple(None if t is None else t.clone() for t in batch)
        self.lr = torch.zeros((), dtype=torch.float64, device=device)
        self.w_norms = _norms([p.detach() for p in params])
        saved = [p.detach().clone() for p in params]
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):  # warm-up: handles and workspaces outside the capture
                for _ in range(3):  # at rate 0; the weights are restored below all the same
                    step(self.batch, self.lr, self.w_norms)
            torch.cuda.current_stream(device).wait_stream(side)
            for p in params:
                p.grad = None  # the capture allocates the gradients in the graph's memory pool
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss = step(self.batch, self.lr, self.w_norms)
        finally:
            with torch.no_grad():
                for p, w in zip(params, saved, strict=True):
                    p.copy_(w)

    def set_epoch(self, lr: float, w_norms: Tensor) -> None:
        """The rate and the weights' norms (P,) that every batch of this epoch uses."""
        self.lr.fill_(lr)
        self.w_norms.copy_(w_norms)

    def __call__(self, batch: tuple[Tensor, Tensor, Tensor | None]) -> Tensor:
        """Run one full batch; the returned loss is overwritten by the next call."""
        for static, t in zip(self.batch, batch, strict=True):
            if static is not None:
                static.copy_(t)
        self.graph.replay()
        return self.loss


def capture_step(
    model: nn.Module,
    params: list[nn.Parameter],
    bases: Mapping[str, Tensor],
    forget: SampleSet,
    config: UnlearnConfig,
    device: str | torch.device,
    loss_fn: LossFn | None,
    free_rows: tuple[nn.Parameter, Tensor] | None,
) -> CapturedStep | None:
    """The CUDA graph of one full batch for ``unlearn(..., cuda_graph=True)``, or None (logged)
    where it does not apply or the capture fails: the loop then runs eagerly."""
    device = torch.device(device)
    b = config.batch_size
    if device.type != "cuda" or config.step != "calibrated" or not params or len(forget) < b:
        logger.info("cuda_graph: not used (it needs CUDA, the calibrated step and a full batch)")
        return None
    n_batches = math.ceil(len(forget) / b)

    def step(batch: tuple[Tensor, Tensor, Tensor | None], lr: Tensor, w_norms: Tensor) -> Tensor:
        return _descent_step(
            model, params, bases, batch, config, lr, w_norms, n_batches, loss_fn, free_rows
        )

    first = slice(0, b)
    ids = forget.sample_id[first].to(device) if loss_fn is not None else None
    example = (forget.inputs(first).to(device), forget.y[first].to(device), ids)
    try:
        return CapturedStep(step, params, example, device)
    except RuntimeError as err:
        logger.warning("cuda_graph: the capture failed, so the loop runs eagerly: %s", err)
        return None


def descent_epoch(
    model: nn.Module,
    params: list[nn.Parameter],
    bases: Mapping[str, Tensor],
    forget: SampleSet,
    config: UnlearnConfig,
    lr: float,
    epoch: int,
    device: str | torch.device,
    loss_fn: LossFn | None,
    free_rows: tuple[nn.Parameter, Tensor] | None = None,
    captured: CapturedStep | None = None,
) -> float:
    """One shuffled pass of projected descent over the forget set; returns the mean loss.

    The shuffle depends only on (config.seed, epoch), so a redone epoch sees the same batches.
    ``free_rows`` = (weight, row indices): rows whose gradient is applied unprojected. Norms and
    step sizes stay on the device: no host synchronisation inside the pass. ``captured``: full
    batches replay this CUDA graph of the same step (:class:`CapturedStep`).
    """
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    order = torch.randperm(len(forget), generator=generator)  # (N_f,)
    # once per epoch, not per batch (each per-batch step is a few more kernel launches, which
    # bound an epoch on a GPU): the normalised inputs (elementwise, so the same values), the
    # order on the device, and for a replacement loss the shuffled ids there (ids live on the CPU)
    inputs, labels = forget.inputs().to(device), forget.y.to(device)  # (N_f, ...), (N_f,)
    order_here = order.to(device)
    shuffled_ids = forget.sample_id[order].to(device) if loss_fn is not None else None
    n_batches = math.ceil(len(forget) / config.batch_size)
    calibrated = config.step == "calibrated" and bool(params)  # no weights: nothing to scale
    # per-weight norms as one (P,) vector: a few kernels per batch, not a few per weight
    w_norms = _norms([p.detach() for p in params]) if calibrated else None  # (P,) float64
    if captured is not None:
        captured.set_epoch(lr, w_norms)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(forget), config.batch_size):
        idx = order_here[start : start + config.batch_size]  # (B,)
        ids = shuffled_ids[start : start + config.batch_size] if loss_fn is not None else None
        batch = (inputs[idx], labels[idx], ids)
        if captured is not None and len(idx) == config.batch_size:
            loss = captured(batch)
        else:
            loss = _descent_step(
                model, params, bases, batch, config, lr, w_norms, n_batches, loss_fn, free_rows
            )
        total += loss.double() * len(idx)
    for p in params:
        p.grad = None
    return total.item() / len(forget)


def output_layer(model: nn.Module, num_classes: int) -> tuple[str, nn.Module] | None:
    """The layer whose weight rows are the classes' logits: (name, layer), or None.

    The last tracked ``nn.Linear`` with ``num_classes`` outputs; without one, the last tracked
    layer itself where it is an ``nn.Conv2d`` with ``num_classes`` output channels (an
    all-convolutional head under global pooling, as ``all_cnn``'s conv9: output channel c
    reaches logit c only).
    """
    layers = tracked_layers(model)
    found = None
    for name, layer in layers.items():
        if isinstance(layer, nn.Linear) and layer.out_features == num_classes:
            found = (name, layer)
    if found is None and layers:
        name, last = list(layers.items())[-1]
        if isinstance(last, nn.Conv2d) and last.out_channels == num_classes:
            found = (name, last)
    return found


# --- the loop -------------------------------------------------------------------------------


def unlearn(
    model: nn.Module,
    bases: Mapping[str, Tensor],
    forget: SampleSet,
    val: SampleSet,
    config: UnlearnConfig,
    forget_classes: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[dict], None] | None = None,
    loss_fn: LossFn | None = None,
    original: nn.Module | None = None,
    cuda_graph: bool = False,
) -> UnlearnResult:
    """Unlearn ``forget`` from a copy of ``model`` by projected gradient descent.

    The step and the stopping rule are described in the module docstring.

    Args:
        model: the trained classifier; never modified.
        bases: ``{layer: M (d, k)}`` CGS bases (``pgu.core.cgs.compute_bases``); only the
            weights of tracked layers with k < d are updated.
        forget: the samples to forget, with their true labels.
        val: the validation split (never trained on); used only to decide when to stop.
        config: hyper-parameters and stopping rule.
        forget_classes: the removed classes for class removal; None for sample removal.
        device: where to compute.
        on_epoch: called with each history record as it is made.
        loss_fn: replaces PGU's ``unlearning_loss`` (config.delta / w_* then unused); called
            as ``loss_fn(logits (B, C), y (B,), sample_id (B,))``. For baselines and
            ablations that reuse this loop's step and stopping rule.
        original: with ``config.reference="original"``, the original model when ``model``
            is an earlier request's result: its validation metrics are the reference of the
            target and the guards (evaluated once, on the validation split only). None:
            ``model``'s before the first epoch.
        cuda_graph: on CUDA with the calibrated step, replay each full batch as one captured
            CUDA graph (:class:`CapturedStep`; experimental, not yet run on a GPU).

    Returns:
        An :class:`UnlearnResult`. ``history[0]`` describes the start model (epoch 0), with
        the reference validation metrics as ``ref_<key>``; each later record one epoch try:
        epoch, lr (eta_e * s, the rate actually used), scale (s), loss (mean unlearning loss
        of the pass), the keys of :func:`evaluate_sets`, status ("short", "hit", "over") and
        accepted (False for a try undone by a backtrack). ``stop_reason``: "target_reached";
        "target_at_start" (the start model already meets the target and is returned);
        "past_target_at_start" (samples: the forget set already scores worse than held-out
        data, so it looks unseen and the start model is returned);
        "guard_at_start" (the start model already breaks a guard against the original:
        earlier requests did too much damage, retrain); "overshoot" (samples: the band was
        jumped even at the smallest scale); "guard" (every try at the next epoch broke the
        guard); "budget_exhausted"; "no_trainable_layers" (every layer frozen). All but the
        first log a WARNING, and any ending that keeps epoch 0 says that the input model is
        returned unchanged.

    Raises:
        ValueError: empty forget set or validation split.
    """
    if len(forget) == 0:
        raise ValueError("the forget set is empty")
    if len(val) == 0:
        raise ValueError("the validation split is empty; unlearning needs it to know when to stop")
    classes = None if forget_classes is None else [int(c) for c in forget_classes]
    mode = "samples" if classes is None else "classes"
    model = copy.deepcopy(model).to(device).eval()
    params = projected_parameters(model, bases)
    trainable = {id(p) for p in params}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:  # autograd only for the weights that move
        p.requires_grad_(id(p) in trainable)
    bases = {name: m.to(device) for name, m in bases.items()}
    # both sets are small: keep them where the model is (no per-batch host copies)
    forget, val = forget.to(device), val.to(device)
    free_rows = None
    if classes is not None and config.class_free_rows:
        head = output_layer(model, forget.num_classes)
        if head is not None and id(head[1].weight) in trainable:
            rows = torch.tensor(sorted(set(classes)), dtype=torch.long, device=device)
            free_rows = (head[1].weight, rows)
            logger.info("classes %s: rows of %s updated without projection", classes, head[0])
        else:
            logger.warning(
                "class_free_rows: %s, so every row is projected (class removal may then "
                "stop at the guard before the class is forgotten)",
                "no output layer with one row per class"
                if head is None
                else f"the output layer {head[0]!r} is not updated (frozen, or no basis)",
            )
    history: list[dict] = []

    def snapshot() -> list[Tensor]:
        return [p.detach().clone() for p in params]

    def record(rec: dict) -> None:
        history.append(rec)
        if on_epoch is not None:
            on_epoch(rec)

    bar = None

    def finish(reason: str, kept: int, weights: list[Tensor], run: int) -> UnlearnResult:
        if bar is not None:
            bar.close()
        with torch.no_grad():
            for p, w in zip(params, weights, strict=True):
                p.copy_(w)
        for p, flag in flags:
            p.requires_grad_(flag)
        note = "; the INPUT model is returned unchanged: NOTHING was unlearned" if kept == 0 else ""
        level = logging.WARNING if reason in MISSED or kept == 0 else logging.INFO
        logger.log(
            level,
            "unlearning (%s) stopped: %s after %d epochs, keeping epoch %d%s",
            mode,
            reason,
            run,
            kept,
            note,
        )
        return UnlearnResult(model, history, reason, run, kept, ran_scale)

    start = evaluate_sets(model, forget, val, classes, device)
    # the validation metrics the target and the guards read (validation_metrics' keys)
    ref = {k: v for k, v in start.items() if k.startswith("val_") or k.endswith("_val_acc")}
    if original is not None and config.reference == "original":
        ref = validation_metrics(original, val, classes, device)
    status, dist = _assess(start, start, ref, classes is not None, config)
    record(
        {
            "epoch": 0,
            "lr": 0.0,
            "scale": 1.0,
            "loss": math.nan,
            **start,
            **{f"ref_{k}": v for k, v in ref.items()},
            "status": status,
            "accepted": True,
        }
    )
    logger.info(
        "unlearning %d samples (%s mode, %s); start: %s; reference (%s): %s",
        len(forget),
        mode,
        asdict(config),
        _fmt(start),
        "current epoch"
        if config.reference == "current"
        else "original model"
        if original is not None
        else "start model",
        _fmt(ref),
    )
    scale = ran_scale = 1.0  # the scale of the next try; of the last try run
    if not params:
        return finish("no_trainable_layers", 0, [], 0)
    # samples "over" at the start: the forget loss is already beyond held-out data's band, so
    # descent cannot bring it closer (and the loop would blame the first epoch's rate for it)
    past = status == "over" and classes is None and not math.isinf(dist)
    if status == "hit" or past:
        return finish("past_target_at_start" if past else "target_at_start", 0, snapshot(), 0)
    if math.isinf(dist):  # earlier requests already spent the guard: any epoch would break it
        logger.warning(
            "the model this request starts from is already below the guard (validation "
            "accuracy %s vs the reference's %s): the chain of requests has drifted too far "
            "for projected unlearning; retrain on the retain data",
            _fmt({k: start[k] for k in ("val_acc", "other_val_acc") if k in start}),
            _fmt({k: ref[k] for k in ("val_acc", "other_val_acc") if k in ref}),
        )
        return finish("guard_at_start", 0, snapshot(), 0)
    # targets only for a run that goes on: two more prediction passes
    if loss_fn is None and config.sample_loss == "quantile":
        if classes is None:
            fixed = original if original is not None and config.reference == "original" else model
            loss_fn = quantile_loss_fn(model, fixed, forget, val, device)
        else:
            logger.info("sample_loss 'quantile' applies to sample removal; classes use 'pgu'")

    captured = (
        capture_step(model, params, bases, forget, config, device, loss_fn, free_rows)
        if cuda_graph
        else None
    )
    prev = (0, snapshot(), dist)  # (epoch, weights, distance) of the last accepted epoch
    best = prev
    backtracks = 0
    bar = tqdm(total=config.epochs, desc="unlearn", unit="epoch", disable=None, leave=False)
    for e in range(config.epochs):
        eta = config.lr(e)
        for attempt in range(config.max_backtracks + 1):
            loss = descent_epoch(
                model,
                params,
                bases,
                forget,
                config,
                eta * scale,
                e,
                device,
                loss_fn,
                free_rows,
                captured,
            )
            ran_scale = scale
            m = evaluate_sets(model, forget, val, classes, device)
            status, dist = _assess(m, start, ref, classes is not None, config)
            redo = (
                status == "over"
                and config.step == "calibrated"
                and backtracks < config.max_backtracks
            )
            record(
                {
                    "epoch": e + 1,
                    "lr": eta * scale,
                    "scale": scale,
                    "loss": loss,
                    **m,
                    "status": status,
                    "accepted": not redo,
                }
            )
            logger.info(
                "epoch %d try %d: lr %.4g %s -> %s",
                e + 1,
                attempt + 1,
                eta * scale,
                _fmt(m),
                status,
            )
            if not redo:
                break
            with torch.no_grad():  # undo the overshooting epoch, retry with half the step
                for p, w in zip(params, prev[1], strict=True):
                    p.copy_(w)
            scale *= 0.5
            backtracks += 1
        bar.update()
        bar.set_postfix(forget_acc=f"{m['forget_acc']:.4f}", val_acc=f"{m['val_acc']:.4f}")
        here = (e + 1, snapshot(), dist)
        if status == "hit":
            return finish("target_reached", e + 1, here[1], e + 1)
        if status == "over":
            # classes: the guard broke, keep the last epoch that held it; samples: the band
            # was jumped, keep the closer side (ties to the later epoch, which did forget)
            kept = prev if classes is not None or math.isinf(dist) or dist > prev[2] else here
            guard = classes is not None or math.isinf(dist)
            if e == 0 and not guard:  # METHOD section 6: a first-epoch crossing, said clearly
                logger.warning(
                    "the FIRST epoch already jumped the target band (lr %.4g, %d halvings): "
                    "the learning rate is too high for this request; lower "
                    "unlearn.config.lr_start, or allow more max_backtracks",
                    eta * ran_scale,
                    backtracks,
                )
            return finish("guard" if guard else "overshoot", kept[0], kept[1], e + 1)
        prev = here
        if dist <= best[2]:
            best = here
        if attempt == 0:  # short at the first try: earn back one halving
            scale = min(1.0, 2.0 * scale)
    return finish("budget_exhausted", best[0], best[1], config.epochs)


def _fmt(m: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in m.items())
