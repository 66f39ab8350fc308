"""Model registry: the classifiers that PGU trains and then unlearns from.

``build_model(name, in_shape, num_classes, **kwargs)`` builds one of the architectures in
``MODELS``. Every model maps a float32 batch ``(B, *in_shape)`` to logits ``(B, C)``.

Submodules carry meaningful names (``features.conv1``, ``classifier.fc2``, ...) because the
qualified names of the Conv2d/Linear layers become the keys of the stored representation
matrices and CGS bases (see ``pgu.core.representation``).
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
import torchvision
from torch import Tensor, nn

logger = logging.getLogger(__name__)


def _image_shape(in_shape: Sequence[int], model: str) -> tuple[int, int, int]:
    """Check that ``in_shape`` is ``(C, H, W)`` and return it as a tuple of ints."""
    if len(in_shape) != 3:
        hint = (
            ": for tabular data (the csv source) set `model: {name: mlp}` in parameters_train.yml"
            if len(in_shape) == 1
            else ""
        )
        raise ValueError(f"{model} expects in_shape (C, H, W), got {tuple(in_shape)}{hint}")
    c, h, w = (int(s) for s in in_shape)
    return c, h, w


def _pooled(size: int, times: int) -> int:
    """Spatial size after ``times`` MaxPool2d(2) layers (floor division, as PyTorch does)."""
    for _ in range(times):
        size //= 2
    if size < 1:
        raise ValueError(f"input too small for {times} 2x2 poolings")
    return size


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that pools forward-only CPU passes in channels-last memory order.

    PyTorch's CPU kernel for the default (NCHW) order is slow on small maps: 2 x 2 pooling of
    (256, 64, 8, 8) took 6.8 ms against 1.4 ms in channels-last order, both conversions included,
    on this project's CPU (it was about a third of an eval-mode forward pass of digits_cnn).
    A maximum is exact, so both orders give the same values bit for bit. With autograd
    recording, the gradient goes to the first maximum of each window, and the two kernels
    need not pick the same one on ties, so those passes (training, unlearning) keep the
    default kernel and its bytes. Evaluation and the collection of representation matrices
    run under ``torch.no_grad`` and take the fast one. Parameters and state dict are
    ``nn.MaxPool2d``'s (it has none).
    """

    def forward(self, x: Tensor) -> Tensor:
        fast = (
            not torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dim() == 4
            and not self.return_indices
        )
        if fast:
            return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()
        return super().forward(x)


class DigitsCNN(nn.Module):
    """Three-conv network for small grey-scale digits (e.g. sklearn 8x8 digits).

    conv(C->32)-ReLU-BN, conv(32->64)-ReLU-pool-BN, conv(64->128)-ReLU-pool-BN, flatten,
    fc(->256)-ReLU-BN1d, fc(256->num_classes). All convs are 3x3 with padding 1.
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        c, h, w = _image_shape(in_shape, "digits_cnn")
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(c, 32, 3, padding=1)),
                    ("relu1", nn.ReLU()),
                    ("bn1", nn.BatchNorm2d(32)),
                    ("conv2", nn.Conv2d(32, 64, 3, padding=1)),
                    ("relu2", nn.ReLU()),
                    ("pool2", MaxPool2d(2)),
                    ("bn2", nn.BatchNorm2d(64)),
                    ("conv3", nn.Conv2d(64, 128, 3, padding=1)),
                    ("relu3", nn.ReLU()),
                    ("pool3", MaxPool2d(2)),
                    ("bn3", nn.BatchNorm2d(128)),
                ]
            )
        )
        flat = 128 * _pooled(h, 2) * _pooled(w, 2)  # 512 for 8x8 inputs
        self.classifier = nn.Sequential(
            OrderedDict(
                [
                    ("fc1", nn.Linear(flat, 256)),
                    ("relu1", nn.ReLU()),
                    ("bn1", nn.BatchNorm1d(256)),
                    ("fc2", nn.Linear(256, num_classes)),
                ]
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x`` (B, C, H, W) to logits (B, num_classes)."""
        x = self.features(x)  # (B, 128, H/4, W/4)
        x = torch.flatten(x, 1)  # (B, flat)
        return self.classifier(x)


class SmallVGG(nn.Module):
    """The paper's SmallVGG for CIFAR-sized images.

    conv3-128, ReLU, pool, BN, conv3-256, ReLU, pool, BN, conv3-512, ReLU, BN, pool, dropout,
    fc(8192->512 for 32x32), ReLU, BN1d, fc(512->num_classes).
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, *, dropout: float = 0.5) -> None:
        super().__init__()
        c, h, w = _image_shape(in_shape, "small_vgg")
        self.features = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(c, 128, 3, padding=1)),
                    ("relu1", nn.ReLU()),
                    ("pool1", MaxPool2d(2)),
                    ("bn1", nn.BatchNorm2d(128)),
                    ("conv2", nn.Conv2d(128, 256, 3, padding=1)),
                    ("relu2", nn.ReLU()),
                    ("pool2", MaxPool2d(2)),
                    ("bn2", nn.BatchNorm2d(256)),
                    ("conv3", nn.Conv2d(256, 512, 3, padding=1)),
                    ("relu3", nn.ReLU()),
                    ("bn3", nn.BatchNorm2d(512)),
                    ("pool3", MaxPool2d(2)),
                ]
            )
        )
        flat = 512 * _pooled(h, 3) * _pooled(w, 3)  # 8192 for 32x32 inputs
        self.classifier = nn.Sequential(
            OrderedDict(
                [
                    ("dropout", nn.Dropout(dropout)),
                    ("fc1", nn.Linear(flat, 512)),
                    ("relu1", nn.ReLU()),
                    ("bn1", nn.BatchNorm1d(512)),
                    ("fc2", nn.Linear(512, num_classes)),
                ]
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x`` (B, C, H, W) to logits (B, num_classes)."""
        x = self.features(x)  # (B, 512, H/8, W/8)
        x = torch.flatten(x, 1)  # (B, flat)
        return self.classifier(x)


class AllCNN(nn.Module):
    """All-CNN-C (Springenberg et al., 2015), adapted to any image size.

    Nine convolutions and a global average pool, no fully connected layer. Adaptations: every
    3x3 conv uses padding 1 (the original's last 3x3 conv is unpadded), the original's dropout
    is omitted, and each conv but the last is followed by ReLU then BatchNorm. ``width``
    scales the channel counts 96 and 192.
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int, *, width: float = 1.0) -> None:
        super().__init__()
        c, _, _ = _image_shape(in_shape, "all_cnn")
        if width <= 0:
            raise ValueError(f"width must be positive, got {width}")
        c1 = max(1, round(96 * width))
        c2 = max(1, round(192 * width))
        # (name, in, out, kernel, stride); padding keeps the size for 3x3 kernels
        specs = [
            ("conv1", c, c1, 3, 1),
            ("conv2", c1, c1, 3, 1),
            ("conv3", c1, c1, 3, 2),
            ("conv4", c1, c2, 3, 1),
            ("conv5", c2, c2, 3, 1),
            ("conv6", c2, c2, 3, 2),
            ("conv7", c2, c2, 3, 1),
            ("conv8", c2, c2, 1, 1),
        ]
        layers: list[tuple[str, nn.Module]] = []
        for i, (name, cin, cout, k, s) in enumerate(specs, start=1):
            layers.append((name, nn.Conv2d(cin, cout, k, stride=s, padding=k // 2)))
            layers.append((f"relu{i}", nn.ReLU()))
            layers.append((f"bn{i}", nn.BatchNorm2d(cout)))
        layers.append(("conv9", nn.Conv2d(c2, num_classes, 1)))
        self.features = nn.Sequential(OrderedDict(layers))
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x`` (B, C, H, W) to logits (B, num_classes)."""
        x = self.features(x)  # (B, num_classes, H/4, W/4)
        return torch.flatten(self.pool(x), 1)  # (B, num_classes)


def resnet18(in_shape: Sequence[int], num_classes: int) -> nn.Module:
    """torchvision ResNet-18 (random init) with a stem for small images.

    The 7x7/stride-2 stem conv becomes 3x3/stride 1/padding 1 and the stem max-pool is
    removed, as is usual for 32x32 inputs.
    """
    c, _, _ = _image_shape(in_shape, "resnet18")
    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(c, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


class MLP(nn.Module):
    """Fully connected classifier for tabular data: [fc-ReLU-BN1d] x len(hidden), then fc.

    Inputs of shape (B, *in_shape) are flattened to (B, F) with F = prod(in_shape).
    """

    def __init__(
        self, in_shape: Sequence[int], num_classes: int, *, hidden: Sequence[int] = (256, 128)
    ) -> None:
        super().__init__()
        features = math.prod(int(s) for s in in_shape)
        layers: list[tuple[str, nn.Module]] = []
        width = features
        for i, h in enumerate(hidden, start=1):
            layers.append((f"fc{i}", nn.Linear(width, int(h))))
            layers.append((f"relu{i}", nn.ReLU()))
            layers.append((f"bn{i}", nn.BatchNorm1d(int(h))))
            width = int(h)
        self.features = nn.Sequential(OrderedDict(layers))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x`` (B, F) (or (B, *in_shape)) to logits (B, num_classes)."""
        x = torch.flatten(x, 1)  # (B, F)
        return self.head(self.features(x))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "digits_cnn": DigitsCNN,
    "small_vgg": SmallVGG,
    "all_cnn": AllCNN,
    "resnet18": resnet18,
    "mlp": MLP,
}


def build_model(name: str, in_shape: Sequence[int], num_classes: int, **kwargs) -> nn.Module:
    """Build a registered model with freshly initialised weights.

    Args:
        name: a key of ``MODELS``.
        in_shape: one sample's shape without the batch dimension: (C, H, W) for images,
            (F,) for tabular data.
        num_classes: number of output logits C.
        **kwargs: architecture options (``small_vgg``: ``dropout``; ``all_cnn``: ``width``;
            ``mlp``: ``hidden``).

    Returns:
        A module mapping a float32 batch (B, *in_shape) to logits (B, C).

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names).
        TypeError: an option that the chosen model does not take.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {sorted(MODELS)}")
    factory = MODELS[name]
    params = inspect.signature(factory).parameters
    allowed = [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"model {name!r} got unknown options {unknown}; it accepts {allowed}")
    model = factory(in_shape, num_classes, **kwargs)
    n_params = sum(p.numel() for p in model.parameters())
    logger.debug(  # each load builds its model: at INFO it repeats per request and method
        "built %s for input %s, %d classes: %d parameters",
        name,
        tuple(in_shape),
        num_classes,
        n_params,
    )
    return model
