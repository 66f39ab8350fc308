"""Training and evaluating classifiers: the recipe that produces the original model and, with
the same code on a subset, the retrained gold standard.

Plain SGD with momentum and weight decay, an exponential learning-rate decay from ``lr`` to
``lr_end`` over the epochs, optional crop+flip augmentation for images (the crop pads the
standardised image with zeros, i.e. with each channel's mean). Seeded end to end: the same seed
on the same CPU gives byte-identical weights (on CUDA, cuDNN's defaults are not deterministic:
README, "Determinism").

Under ``torchrun`` (a process group from ``pgu.core.distributed``) training is data-parallel:
every process draws the same permutation and augmentations, trains on its shard of each global
batch of ``batch_size`` samples, and DistributedDataParallel averages the gradients. Without
BatchNorm or dropout this matches the single-process run to float round-off (the gradient sum
is grouped differently); BatchNorm normalises each shard with its own batch statistics, and
skips a final batch with fewer than two samples per process; dropout draws each process's
masks from a stream of its own (seeded from ``seed`` and the rank), as the shards are different
samples. With one process the code path is the plain loop, byte for byte.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from pgu.core import distributed
from pgu.core.checkpoint import build_from_spec
from pgu.core.data import SampleSet
from pgu.core.params import from_params

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

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"training recipe: {key} must be >= 1, got {getattr(self, key)}")
        for key in ("lr", "lr_end"):  # the exponential decay needs both positive
            if not getattr(self, key) > 0:
                raise ValueError(f"training recipe: {key} must be > 0, got {getattr(self, key)}")
        for key in ("momentum", "weight_decay", "crop_padding"):
            if not getattr(self, key) >= 0:
                raise ValueError(f"training recipe: {key} must be >= 0, got {getattr(self, key)}")

    @classmethod
    def from_params(cls, params: dict) -> TrainRecipe:
        """Build from a parameters dict, rejecting unknown keys with their names."""
        return from_params(cls, params, "training")


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' → CUDA when available else CPU; 'cpu' / 'cuda' / 'cuda:N' taken as they are."""
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N' (the `device` parameter of the "
            f"pipeline being run), got {device!r}"
        )
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
    return apply_augmentation(x, draw_augmentation(x.shape[0], padding, flip, generator), padding)


def draw_augmentation(
    b: int, padding: int, flip: bool, generator: torch.Generator
) -> tuple[Tensor | None, Tensor | None]:
    """The random choices of :func:`augment` for a batch of ``b``: (flip mask (B,), offsets (B, 2)).

    Drawn apart from the images so that every process of a distributed run can draw them for
    the whole global batch (keeping the generators in step) and apply its own rows only.
    """
    mask = torch.rand(b, generator=generator) < 0.5 if flip else None  # (B,)
    offsets = (
        torch.randint(0, 2 * padding + 1, (b, 2), generator=generator) if padding > 0 else None
    )  # (B, 2)
    return mask, offsets


def draw_epoch_augmentation(
    n: int, batch_size: int, padding: int, flip: bool, generator: torch.Generator
) -> tuple[Tensor | None, Tensor | None]:
    """:func:`draw_augmentation` for every batch of an epoch of ``n`` samples, in batch order
    (so the generator gives the same values as drawing batch by batch), concatenated: (flip
    mask (N,), offsets (N, 2)); rows ``start:start + batch_size`` are that batch's choices.

    Drawn once an epoch so that they cross to a GPU in one copy, not in two a batch that each
    wait for the device.
    """
    drawn = [
        draw_augmentation(min(batch_size, n - start), padding, flip, generator)
        for start in range(0, n, batch_size)
    ]
    return tuple(  # type: ignore[return-value]
        torch.cat([d[i] for d in drawn]) if drawn and drawn[0][i] is not None else None
        for i in range(2)
    )


def apply_augmentation(
    x: Tensor, choices: tuple[Tensor | None, Tensor | None], padding: int
) -> Tensor:
    """Apply the choices of :func:`draw_augmentation` to a batch (B, C, H, W)."""
    mask, offsets = choices
    if mask is not None:
        x = torch.where(mask.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)
    if offsets is not None:
        b, c, h, w = x.shape
        padded = F.pad(x, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p)
        offsets = offsets.to(x.device)
        # Each sample's window as two gathers (rows, then columns): one kernel each instead of
        # one slice per sample, and the same values as slicing padded[i, :, dy:dy+h, dx:dx+w].
        rows = offsets[:, 0, None] + torch.arange(h, device=x.device)  # (B, H)
        cols = offsets[:, 1, None] + torch.arange(w, device=x.device)  # (B, W)
        x = padded.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, padded.shape[3]))
        x = x.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))  # (B, C, H, W)
    return x


def resident(data: SampleSet, device: str | torch.device) -> SampleSet:
    """``data`` copied once to ``device`` when that is a CUDA device with room for it (its images
    and labels within a quarter of the free memory), else ``data`` itself.

    Batches are then gathered, normalised and augmented on the GPU. On the host those steps
    took about 30 ms per batch of 256 CIFAR images on this project's 2-core CPU (13 ms to
    gather and normalise, 16 to crop and flip), work a GPU training step would wait on; and the
    uint8 images cross once (150 MB for CIFAR-10's 50,000) rather than as float32 batches every
    epoch. On the CPU nothing changes, so neither do the bytes.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return data
    if data.x.is_cuda and device.index in (None, data.x.device.index):
        return data
    free, _ = torch.cuda.mem_get_info(device)
    if data.x.nbytes + data.y.nbytes > free // 4:
        return data  # (batches then cross one by one, as on any other device)
    return data.to(device)


@torch.no_grad()
def predict_logits(
    model: nn.Module, data: SampleSet, batch_size: int = 512, device: str | torch.device = "cpu"
) -> Tensor:
    """Eval-mode logits (N, C) float32 on the CPU, in the order of ``data``.

    The model runs on ``device`` (moved there for the call if it is elsewhere, and moved back);
    ``data`` may live on the CPU or on ``device``.
    """
    was_training = model.training
    first = next(model.parameters(), None)
    home = first.device if first is not None else None
    model.to(device).eval()
    data = resident(data, device)
    try:  # one copy to the host at the end: a copy per batch would wait on the device each time
        out = [model(x.to(device)).float() for x, _ in data.batches(batch_size)]
    finally:
        model.train(was_training)
        if home is not None:
            model.to(home)
    if not out:
        return torch.empty(0, data.num_classes)
    return torch.cat(out).cpu()


def accuracy_and_loss(
    model: nn.Module, data: SampleSet, batch_size: int = 512, device: str | torch.device = "cpu"
) -> tuple[float, float]:
    """Top-1 accuracy in [0, 1] and mean cross-entropy of ``model`` on ``data`` (NaN if empty)."""
    if len(data) == 0:
        return math.nan, math.nan
    logits = predict_logits(model, data, batch_size, device)
    y = data.y.cpu()
    acc = (logits.argmax(1) == y).double().mean().item()
    loss = F.cross_entropy(logits, y).item()
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
    train = resident(train, device)  # the CPU: as it is
    generator = torch.Generator().manual_seed(recipe.seed)
    optimiser = torch.optim.SGD(
        model.parameters(),
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
    )
    augmenting = len(train.in_shape) == 3 and (recipe.crop_padding or recipe.horizontal_flip)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    world = distributed.world_size()
    net = _data_parallel(model, torch.device(device)) if world > 1 else model
    if world > 1:  # (DDP has copied process 0's weights to every process by now)
        # dropout draws from the global generator, which seed_everything set alike on every
        # process: without this, process r's i-th sample would get process 0's i-th mask
        torch.manual_seed(recipe.seed * 1_000_003 + distributed.rank())
    main = distributed.is_main_process()
    history: list[dict] = []
    bar = tqdm(
        range(recipe.epochs),
        desc="train",
        unit="epoch",
        disable=None if main else True,
        leave=False,
    )
    for epoch in bar:
        lr = exponential_lr(recipe.lr, recipe.lr_end, epoch, recipe.epochs)
        for group in optimiser.param_groups:
            group["lr"] = lr
        model.train()
        # Sums stay on the device (no per-batch sync); float64 additions in batch order give
        # the same value as summing Python floats.
        seen = 0
        correct = torch.zeros((), dtype=torch.int64, device=device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        # The same permutation and augmentation draws on every process: each takes its
        # contiguous shard of every global batch, so the samples seen per step do not depend
        # on the number of processes (with one process this is SampleSet.batches exactly).
        # Everything an epoch draws crosses to the data's device once, before its first batch.
        here = train.y.device
        order = torch.randperm(len(train), generator=generator).to(here)  # (N,)
        if augmenting:  # (N,) flips and (N, 2) offsets, rows in the order of ``order``
            drawn = draw_epoch_augmentation(
                len(train),
                recipe.batch_size,
                recipe.crop_padding,
                recipe.horizontal_flip,
                generator,
            )
            drawn = tuple(c.to(here) if c is not None else None for c in drawn)
        for start in range(0, len(train), recipe.batch_size):
            idx = order[start : start + recipe.batch_size]  # (B,) the global batch
            lo, hi = distributed.shard(len(idx))  # (0, B) with one process
            x, y = train.inputs(idx[lo:hi]), train.y[idx[lo:hi]]
            if augmenting:
                mine = tuple(c[start + lo : start + hi] if c is not None else None for c in drawn)
                x = apply_augmentation(x, mine, recipe.crop_padding)
            if has_bn and len(idx) // world < 2:
                continue  # BatchNorm cannot train on a batch of one (on any process)
            # without BatchNorm a process whose shard is empty still takes part (a batch of no
            # rows: zero loss, zero gradient), so a final batch smaller than the process count
            # is trained on, as one process trains on it
            x, y = x.to(device), y.to(device)
            logits = net(x)
            if world == 1:
                loss = F.cross_entropy(logits, y)
                batch_loss = loss.detach().double() * y.shape[0]
            else:
                # DDP averages gradients over processes: weight each shard's sum so that the
                # average is the mean over the global batch, whatever the shard sizes.
                summed = F.cross_entropy(logits, y, reduction="sum")
                loss = summed * (world / len(idx))
                batch_loss = summed.detach().double()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            seen += y.shape[0]
            correct += (logits.detach().argmax(1) == y).sum()
            loss_sum += batch_loss
        correct, loss_sum = int(correct.item()), loss_sum.item()  # one sync per epoch
        if world > 1:
            seen, correct, loss_sum = distributed.all_reduce_sum([seen, correct, loss_sum])
            # every process's last forward pass updated its own BatchNorm statistics
            distributed.broadcast_buffers(model)
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
        if main:
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


def _data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel (gradients all-reduced after backward)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return DistributedDataParallel(model, device_ids=[index])
    return DistributedDataParallel(model)


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
    # saved in the model file's header (checkpoint.model_to_bytes): a retraining that must match
    # this model, the gold standard, reads how it was trained from the model itself
    model.pgu_recipe = dict(recipe.__dict__)
    return model.cpu().eval(), history
