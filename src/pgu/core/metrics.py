"""Evaluation metrics of unlearning (METHOD.md section 8).

- ``entropy`` of output distributions and ``softmax_outputs`` of a model on a sample set;
- ``js_divergence``: per-sample Jensen-Shannon divergence between two models' outputs, e.g. the
  unlearned model versus the model retrained without the forget set;
- ``tug_of_war``: ToW = prod_s (1 - |acc_a(s) - acc_b(s)|) over sets s (retain, forget, test):
  1 when two models agree on every accuracy, lower the further apart they are;
- ``entropy_attack``: the cheap membership-inference attack: a logistic regression that tells
  training members from unseen samples by the output entropy and loss, then reports which
  fraction of a target set (the forget set) it calls "member". The retrained model's rate is
  the reference, not 0.

All functions take probabilities as float tensors or arrays and work in float64.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn

from pgu.core.data import SampleSet
from pgu.core.training import predict_logits

# Floor on entropies and losses before their logarithm is taken as an attack feature: a float64
# softmax of a very confident output can give an exact 0.
FEATURE_FLOOR = 1e-12


def _as_f64(x: Tensor | np.ndarray) -> Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).to(torch.float64)


def entropy(probs: Tensor | np.ndarray) -> Tensor:
    """Shannon entropy in nats of each row of ``probs`` (N, C): (N,) float64, 0 log 0 = 0."""
    p = _as_f64(probs)
    return -torch.special.xlogy(p, p).sum(dim=-1)


def softmax_outputs(
    model: nn.Module, data: SampleSet, batch_size: int = 512, device: str | torch.device = "cpu"
) -> Tensor:
    """Eval-mode softmax outputs of ``model`` on ``data``: (N, C) float64 on the CPU.

    The softmax is taken in float64 so that the tiny probabilities of confident outputs (and
    hence their entropy and loss) do not round to 0.
    """
    logits = predict_logits(model, data, batch_size, device)  # (N, C) float32
    return torch.softmax(logits.double(), dim=1)


def cross_entropy(probs: Tensor | np.ndarray, y: Tensor | np.ndarray) -> Tensor:
    """Per-sample loss -ln p_y in nats: (N,) float64 (inf where p_y is exactly 0)."""
    p = _as_f64(probs)
    labels = torch.as_tensor(np.asarray(y)).long()
    return -torch.log(p.gather(1, labels.view(-1, 1)).squeeze(1))


def js_divergence(p: Tensor | np.ndarray, q: Tensor | np.ndarray) -> Tensor:
    """Jensen-Shannon divergence (natural log) between rows of ``p`` and ``q`` (N, C): (N,).

    JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2 with m = (p + q) / 2; symmetric, 0 iff p = q,
    and at most ln 2.
    """
    p, q = _as_f64(p), _as_f64(q)
    if p.shape != q.shape:
        raise ValueError(f"shapes differ: {tuple(p.shape)} vs {tuple(q.shape)}")
    m = (p + q) / 2
    # xlogy(p, p / m) = p ln(p / m) with 0 ln 0 = 0; where p > 0, m >= p / 2 > 0
    kl_pm = (torch.special.xlogy(p, p) - torch.special.xlogy(p, m)).sum(-1)
    kl_qm = (torch.special.xlogy(q, q) - torch.special.xlogy(q, m)).sum(-1)
    return ((kl_pm + kl_qm) / 2).clamp(0.0, math.log(2))


def tug_of_war(acc_a: Mapping[str, float], acc_b: Mapping[str, float]) -> float:
    """ToW = prod over sets s of (1 - |acc_a[s] - acc_b[s]|), accuracies as fractions in [0, 1].

    Args:
        acc_a: accuracy of model a per set, e.g. {"retain": .99, "forget": .98, "test": .97}.
        acc_b: accuracy of model b on the same sets.

    Raises:
        ValueError: the two mappings name different sets.
    """
    if set(acc_a) != set(acc_b):
        raise ValueError(f"different sets: {sorted(acc_a)} vs {sorted(acc_b)}")
    return float(np.prod([1.0 - abs(float(acc_a[s]) - float(acc_b[s])) for s in acc_a]))


def attack_features(probs: Tensor | np.ndarray, y: Tensor | np.ndarray) -> np.ndarray:
    """Per-sample [ln entropy, ln loss] (N, 2) float64, both floored at ``FEATURE_FLOOR``.

    Both quantities span orders of magnitude (1e-8 on memorised samples, ~1 on errors); on
    their raw values a linear classifier only sees the few misclassified samples.
    """
    h = entropy(probs).clamp_min(FEATURE_FLOOR).log()  # (N,)
    loss = cross_entropy(probs, y).clamp(FEATURE_FLOOR, 1e6).log()  # (N,)
    return torch.stack([h, loss], dim=1).numpy()


def entropy_attack(
    member_probs: Tensor | np.ndarray,
    member_y: Tensor | np.ndarray,
    nonmember_probs: Tensor | np.ndarray,
    nonmember_y: Tensor | np.ndarray,
    target_probs: Tensor | np.ndarray,
    target_y: Tensor | np.ndarray,
    seed: int = 0,
) -> dict[str, float]:
    """Membership-inference attack on output entropy and loss (METHOD.md section 8).

    A logistic regression (on standardised ``attack_features``) learns to tell members
    (samples the model was trained on, normally the retain set) from non-members (unseen
    samples, normally the test split). The larger of the two sets is subsampled without
    replacement, with ``seed``, to the size of the smaller so that a guess scores 0.5.

    Args:
        member_probs, member_y: (N_m, C) softmax outputs and (N_m,) labels of members.
        nonmember_probs, nonmember_y: the same for non-members.
        target_probs, target_y: the same for the samples under test (the forget set).
        seed: seeds the subsampling and the cross-validation folds.

    Returns:
        ``member_rate``: fraction of the target samples the attack (fitted on all balanced
        data) calls member; ``auc``: ROC AUC of members vs non-members from 2-fold
        cross-validated scores (0.5 = the attack cannot tell them apart);
        ``n_per_class``: samples per class the attack was fitted on.

    Raises:
        ValueError: fewer than 2 members or non-members.
    """
    fm = attack_features(member_probs, member_y)
    fn = attack_features(nonmember_probs, nonmember_y)
    ft = attack_features(target_probs, target_y)
    n = min(len(fm), len(fn))
    if n < 2:
        raise ValueError(f"the attack needs >= 2 members and non-members, got {len(fm)}, {len(fn)}")
    rng = np.random.default_rng(seed)
    fm = fm[np.sort(rng.choice(len(fm), n, replace=False))]
    fn = fn[np.sort(rng.choice(len(fn), n, replace=False))]
    x = np.concatenate([fm, fn])  # (2n, 2)
    y = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])  # (2n,)

    def attacker():
        return make_pipeline(StandardScaler(), LogisticRegression())

    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=seed)
    scores = cross_val_predict(attacker(), x, y, cv=folds, method="decision_function")
    auc = float(roc_auc_score(y, scores))
    fitted = attacker().fit(x, y)
    member_rate = float(fitted.predict(ft).mean()) if len(ft) else math.nan
    return {"member_rate": member_rate, "auc": auc, "n_per_class": int(n)}
