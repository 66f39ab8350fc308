"""Unlearning losses on the forget set (METHOD.md sections 4 and 7).

With p = softmax(logits) and y a forget sample's label:

- sample/class removal: L = w1 * mean(-log(1 - (p_y - delta))) + w2 * mean(sum_c p_c log p_c).
  The first term pushes p_y down (the offset delta keeps it finite as p_y -> 1); the second
  is the negative entropy, so minimising it spreads the probability mass.
- de-poisoning (label flips): the same first term on the wrong label, plus w2 times the
  entropy of the softmax over the other C - 1 classes; minimising that entropy makes the
  model commit to one of the other classes.

- quantile matching (an option for sample removal, not METHOD's): each forget sample i gets a
  target loss t_i, the held-out loss of the same rank (``quantile_targets``), and
  L = mean_i (ln l_i - ln t_i)^2 with l_i its cross-entropy. A model retrained without the
  forget set treats it like held-out data: its per-sample losses there look like the held-out
  ones, easy samples staying confident. PGU's loss instead raises every sample's loss alike.

All are vectorised over the batch and computed from log-softmax; 1 - p_y is evaluated as
-expm1(log p_y) (accurate when p_y is close to 1) and the argument of the log is clamped to
at least ``EPS`` (which only matters for delta <= 0, since 1 - (p_y - delta) >= delta).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Lower bound on 1 - (p_y - delta) inside the log; reached only when delta <= 0.
EPS = 1e-12
# Floor on per-sample cross-entropies before their log is taken (a float32 loss of a very
# confident output can be exactly 0).
LOSS_FLOOR = 1e-8


def _check(logits: Tensor, y: Tensor) -> None:
    """Validate logits (B, C) and labels (B,)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, C), got shape {tuple(logits.shape)}")
    if y.shape != logits.shape[:1]:
        raise ValueError(f"labels must be (B,) = {tuple(logits.shape[:1])}, got {tuple(y.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("empty batch")


def forget_term(log_p: Tensor, y: Tensor, delta: float) -> Tensor:
    """Per-sample L_forget = -log(1 - (p_y - delta)).

    Args:
        log_p: (B, C) log-probabilities.
        y: (B,) int64 labels whose probability is pushed down.
        delta: offset; 0.05 for removal, 0.1 for de-poisoning.

    Returns:
        (B,) losses in nats.
    """
    log_p_y = log_p.gather(1, y.long().unsqueeze(1)).squeeze(1)  # (B,)
    one_minus_p_y = -torch.expm1(log_p_y)  # (B,) = 1 - p_y, accurate near p_y = 1
    return -torch.log((one_minus_p_y + delta).clamp_min(EPS))


def unlearning_loss(
    logits: Tensor,
    y: Tensor,
    delta: float = 0.05,
    w_forget: float = 1.0,
    w_entropy: float = 0.2,
) -> Tensor:
    """PGU's unlearning loss on a batch of forget samples (METHOD.md section 4).

    L = w_forget * mean_i(-log(1 - (p_{i,y_i} - delta))) + w_entropy * mean_i(sum_c p_ic log p_ic)

    Args:
        logits: (B, C) model outputs.
        y: (B,) true labels of the forget samples.
        delta: offset inside the log (METHOD: 0.05 for sample removal).
        w_forget: weight w1 of the forget term.
        w_entropy: weight w2 of the negative-entropy term.

    Returns:
        Scalar loss in nats.
    """
    _check(logits, y)
    log_p = F.log_softmax(logits, dim=1)  # (B, C)
    l_forget = forget_term(log_p, y, delta)  # (B,)
    l_neg_entropy = (log_p.exp() * log_p).sum(dim=1)  # (B,) = -H(p)
    return w_forget * l_forget.mean() + w_entropy * l_neg_entropy.mean()


def depoison_loss(
    logits: Tensor,
    y_wrong: Tensor,
    delta: float = 0.1,
    w_forget: float = 1.0,
    w_entropy: float = 0.2,
) -> Tensor:
    """De-poisoning loss on label-flipped samples (METHOD.md section 7).

    L = w_forget * mean_i(-log(1 - (p_{i,w_i} - delta))) + w_entropy * mean_i(H(q_i)),
    where w_i is the wrong (poisoned) label and q_i = softmax of the logits of the C - 1
    classes other than w_i. Note the sign: +H(q) is added, so minimising L makes q peaked
    (the model commits to some other class), unlike ``unlearning_loss``, whose entropy term
    is -H(p).

    Args:
        logits: (B, C) model outputs, C >= 2.
        y_wrong: (B,) the wrong labels the samples were trained with.
        delta: offset inside the log (METHOD: 0.1 for de-poisoning).
        w_forget: weight w1 of the forget term.
        w_entropy: weight w2 of the other-class entropy term.

    Returns:
        Scalar loss in nats.
    """
    _check(logits, y_wrong)
    b, c = logits.shape
    if c < 2:
        raise ValueError("de-poisoning needs at least 2 classes")
    log_p = F.log_softmax(logits, dim=1)  # (B, C)
    l_forget = forget_term(log_p, y_wrong, delta)  # (B,)
    # Drop the wrong class's column instead of masking it with -inf, so no 0 * inf appears
    # in the forward or backward pass.
    keep = torch.ones_like(logits, dtype=torch.bool)
    keep[torch.arange(b, device=logits.device), y_wrong.long()] = False
    others = logits[keep].view(b, c - 1)  # (B, C-1), class order preserved
    log_q = F.log_softmax(others, dim=1)  # (B, C-1)
    entropy_q = -(log_q.exp() * log_q).sum(dim=1)  # (B,)
    return w_forget * l_forget.mean() + w_entropy * entropy_q.mean()


def quantile_targets(forget_losses: Tensor, held_out_losses: Tensor) -> Tensor:
    """The held-out loss of each forget sample's rank: a rank-preserving map between the two.

    Forget sample i, whose loss is the r_i-th smallest of N_f (r_i = 0, 1, ...; ties keep
    their order), gets the held-out loss at quantile (r_i + 1/2) / N_f, i.e. the
    floor((r_i + 1/2) N_v / N_f)-th smallest of the N_v held-out losses, or its own loss if
    that is higher: unlearning never asks a forget sample to become more confident. (Where
    the held-out losses run below the forget losses, as on digits, the symmetric target made
    forget samples look more like members than before; measured, README.)

    Args:
        forget_losses: (N_f,) per-sample losses of the forget samples (nats).
        held_out_losses: (N_v,) per-sample losses of held-out samples (nats).

    Returns:
        (N_f,) target losses, floored at ``LOSS_FLOOR``, in the order of ``forget_losses``;
        non-decreasing along the order of the forget losses.
    """
    if forget_losses.dim() != 1 or held_out_losses.dim() != 1:
        raise ValueError("forget and held-out losses must be 1-d")
    if len(forget_losses) == 0 or len(held_out_losses) == 0:
        raise ValueError("quantile targets need at least one forget and one held-out loss")
    n_f, n_v = len(forget_losses), len(held_out_losses)
    rank = torch.empty(n_f, dtype=torch.long, device=forget_losses.device)
    rank[torch.argsort(forget_losses, stable=True)] = torch.arange(n_f, device=rank.device)
    index = ((2 * rank + 1) * n_v) // (2 * n_f)  # (N_f,) = floor((r + 1/2) N_v / N_f)
    sorted_held_out = torch.sort(held_out_losses.to(forget_losses.device)).values  # (N_v,)
    return torch.maximum(sorted_held_out[index], forget_losses).clamp_min(LOSS_FLOOR)


def quantile_loss(logits: Tensor, y: Tensor, targets: Tensor) -> Tensor:
    """L = mean_i (ln l_i - ln t_i)^2: each forget sample's loss towards its target.

    Args:
        logits: (B, C) model outputs.
        y: (B,) true labels of the forget samples.
        targets: (B,) target losses (nats, > 0), as from ``quantile_targets``.

    Returns:
        Scalar loss (squared nats of log-loss).
    """
    _check(logits, y)
    if targets.shape != y.shape:
        raise ValueError(f"targets must be (B,) = {tuple(y.shape)}, got {tuple(targets.shape)}")
    losses = F.cross_entropy(logits, y.long(), reduction="none").clamp_min(LOSS_FLOOR)  # (B,)
    return (losses.log() - targets.to(losses.dtype).log()).pow(2).mean()
