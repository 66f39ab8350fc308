"""Training and evaluating classifiers: the recipe that produces the original model and, with
the same code on a subset, the retrained gold standard.

Plain SGD with momentum and weight decay, an exponential learning-rate decay from ``lr`` to
``lr_end`` over the epochs, optional crop+flip augmentation for images. Seeded end to end: the
same seed on the same machine gives byte-identical weights.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from pgu.core.checkpoint import build_from_spec
from pgu.core.data import SampleSet

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainRecipe:
    """Hyper-parameters of one training run (see conf/base/parameters_train.yml)."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.05
    lr_end: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 5e-4
    crop_padding: int = 0  # random-crop padding in pixels; 0 disables cropping
    horizontal_flip: bool = False
    seed: int = 0

    @classmethod
    def from_params(cls, params: dict) -> TrainRecipe:
        """Build from a parameters dict, rejecting unknown keys with their names."""
        known = {f.name for f in fields(cls)}
        unknown = set(params) - known
        if unknown:
            raise ValueError(
                f"unknown training parameters {sorted(unknown)}; valid: {sorted(known)}"
            )
        return cls(**params)


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' → CUDA when available else CPU; 'cpu' / 'cuda' / 'cuda:N' taken as they are."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use 'cpu'")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    """Seed torch's global generators (model initialisation draws from them)."""
    torch.manual_seed(seed)


def exponential_lr(lr: float, lr_end: float, epoch: int, epochs: int) -> float:
    """η_e = lr · (lr_end / lr)^(e / (E − 1)): lr at the first epoch, lr_end at the last."""
    if epochs <= 1:
        return lr
    return lr * (lr_end / lr) ** (epoch / (epochs - 1))


def augment(x: Tensor, padding: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Random crop with zero padding and random horizontal flip of a batch (B, C, H, W)."""
    if flip:
        mask = torch.rand(x.shape[0], generator=generator) < 0.5  # (B,)
        x = torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)
    if padding > 0:
        b, _, h, w = x.shape
        padded = F.pad(x, (padding, padding, padding, padding))
        offsets = torch.randint(0, 2 * padding + 1, (b, 2), generator=generator)  # (B, 2)
        x = torch.stack(
            [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())]
        )
    return x


@torch.no_grad()
def predict_logits(
    model: nn.Module, data: SampleSet, batch_size: int = 512, device: str | torch.device = "cpu"
) -> Tensor:
    """Eval-mode logits (N, C) float32 on the CPU, in the order of ``data``."""
    was_training = model.training
    model.eval()
    out = [model(x.to(device)).float().cpu() for x, _ in data.batches(batch_size)]
    model.train(was_training)
    if not out:
        return torch.empty(0, data.num_classes)
    return torch.cat(out)


def accuracy_and_loss(
    model: nn.Module, data: SampleSet, batch_size: int = 512, device: str | torch.device = "cpu"
) -> tuple[float, float]:
    """Top-1 accuracy in [0, 1] and mean cross-entropy of ``model`` on ``data`` (NaN if empty)."""
    if len(data) == 0:
        return math.nan, math.nan
    logits = predict_logits(model, data, batch_size, device)
    acc = (logits.argmax(1) == data.y).double().mean().item()
    loss = F.cross_entropy(logits, data.y).item()
    return acc, loss


def train_model(
    model: nn.Module,
    train: SampleSet,
    recipe: TrainRecipe,
    val: SampleSet | None = None,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train ``model`` in place on ``train`` with ``recipe``.

    Args:
        model: a freshly built model (initialised under ``seed_everything(recipe.seed)``).
        train: training samples.
        recipe: hyper-parameters.
        val: optional held-out samples, evaluated after every epoch.
        device: where to train.
        on_epoch: optional callback receiving each epoch's record.

    Returns:
        One record per epoch: epoch, lr, train_loss, train_acc (running, augmented) and
        val_acc / val_loss when ``val`` is given.
    """
    if len(train) == 0:
        raise ValueError("cannot train on an empty sample set")
    model.to(device)
    generator = torch.Generator().manual_seed(recipe.seed)
    optimiser = torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
    )
    images = len(train.in_shape) == 3
    history: list[dict] = []
    bar = tqdm(range(recipe.epochs), desc="train", unit="epoch", disable=None, leave=False)
    for epoch in bar:
        lr = exponential_lr(recipe.lr, recipe.lr_end, epoch, recipe.epochs)
        for group in optimiser.param_groups:
            group["lr"] = lr
        model.train()
        seen, correct, loss_sum = 0, 0, 0.0
        for x, y in train.batches(recipe.batch_size, generator):
            if images and (recipe.crop_padding or recipe.horizontal_flip):
                x = augment(x, recipe.crop_padding, recipe.horizontal_flip, generator)
            if x.shape[0] < 2 and any(
                isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
            ):
                continue  # BatchNorm cannot train on a batch of one
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            seen += y.shape[0]
            correct += (logits.argmax(1) == y).sum().item()
            loss_sum += loss.item() * y.shape[0]
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": correct / max(seen, 1),
        }
        if val is not None and len(val):
            record["val_acc"], record["val_loss"] = accuracy_and_loss(model, val, device=device)
        history.append(record)
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
        logger.info(
            "epoch %d/%d %s",
            epoch + 1,
            recipe.epochs,
            " ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch"),
        )
        if on_epoch is not None:
            on_epoch(record)
    model.eval()
    return history


def fit_from_scratch(
    spec: dict,
    train: SampleSet,
    recipe: TrainRecipe,
    val: SampleSet | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, list[dict]]:
    """Build the model of ``spec`` under ``recipe.seed`` and train it: the original model on the
    whole train split, or the retrained gold standard on the train split minus forgotten samples.

    Returns:
        (trained model on the CPU in eval mode, per-epoch history).
    """
    seed_everything(recipe.seed)
    model = build_from_spec(spec)
    history = train_model(model, train, recipe, val=val, device=device)
    return model.cpu().eval(), history
