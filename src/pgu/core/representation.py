"""Representation matrices: per-layer sums of input outer products (METHOD.md section 1).

For every tracked layer l (each ``nn.Conv2d`` and ``nn.Linear``) the representation matrix
is R_l = sum over rows r of r r^T (d x d), where the rows are

- Linear: the layer input a in R^d, d = in_features, one row per sample;
- Conv2d: every patch the kernel sees, unfolded with the layer's own kernel size, dilation,
  padding and stride, d = C_in * kh * kw, one row per sample and output position.

With these rows a weight gradient is G = sum_rows delta r^T, so the gradients of a layer lie
in the row space of R_l. The rows are ordered like ``weight.view(out, -1)``, so
``W.view(out, -1) @ rows.T`` reproduces the layer output (without bias).

``collect_representations`` gathers every R_l in one eval-mode forward pass with forward
pre-hooks, accumulating in float64 so that R_full - R_forget equals R_retain to round-off.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

TRACKED_TYPES = (nn.Conv2d, nn.Linear)


def tracked_layers(model: nn.Module) -> dict[str, nn.Module]:
    """All Conv2d and Linear layers of ``model``, by qualified name, in ``named_modules`` order.

    Args:
        model: any module.

    Returns:
        ``{qualified_name: layer}``; these names key the representation matrices and bases.
    """
    return {name: m for name, m in model.named_modules() if isinstance(m, TRACKED_TYPES)}


def layer_dim(layer: nn.Module) -> int:
    """Row length d of a tracked layer: in_features (Linear) or C_in * kh * kw (Conv2d)."""
    if isinstance(layer, nn.Linear):
        return layer.in_features
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        return layer.in_channels // layer.groups * kh * kw
    raise TypeError(f"not a tracked layer type: {type(layer).__name__}")


def _conv_padding(layer: nn.Conv2d) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """Explicit padding of a conv: (left, right, top, bottom) for F.pad, or (ph, pw) for unfold.

    Returns ``(pad4, pad2)``; exactly one of them is non-zero. String padding ('valid',
    'same') is turned into numbers the way ``nn.Conv2d`` does ('same' may be asymmetric).
    """
    if isinstance(layer.padding, str):
        if layer.padding == "valid":
            return (0, 0, 0, 0), (0, 0)
        # 'same' (stride 1 only, enforced by nn.Conv2d): total = dilation * (k - 1), the
        # extra pixel of an odd total goes to the right/bottom, as in PyTorch.
        th = layer.dilation[0] * (layer.kernel_size[0] - 1)
        tw = layer.dilation[1] * (layer.kernel_size[1] - 1)
        return (tw // 2, tw - tw // 2, th // 2, th - th // 2), (0, 0)
    ph, pw = layer.padding
    return (0, 0, 0, 0), (int(ph), int(pw))


def layer_rows(layer: nn.Module, a: Tensor) -> Tensor:
    """Rows whose outer products sum to the layer's representation matrix.

    Args:
        layer: an ``nn.Conv2d`` (groups 1, padding_mode 'zeros') or ``nn.Linear``.
        a: the layer's input: (B, C_in, H, W) for a conv, (..., in_features) for a linear.

    Returns:
        (n_rows, d): for a conv n_rows = B * L patches (L output positions), d = C_in*kh*kw,
        ordered like ``weight.view(out, -1)``; for a linear n_rows = prod(leading dims).

    Raises:
        NotImplementedError: grouped convs or non-zero padding modes.
    """
    if isinstance(layer, nn.Linear):
        return a.reshape(-1, layer.in_features)  # (B, d)
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise NotImplementedError("representation rows of grouped convs are not supported")
        if layer.padding_mode != "zeros":
            raise NotImplementedError(
                f"padding_mode {layer.padding_mode!r} is not supported, only 'zeros'"
            )
        if a.dim() != 4:
            raise ValueError(f"conv input must be (B, C, H, W), got shape {tuple(a.shape)}")
        pad4, pad2 = _conv_padding(layer)
        if any(pad4):
            a = F.pad(a, pad4)
        patches = F.unfold(
            a,
            kernel_size=layer.kernel_size,
            dilation=layer.dilation,
            padding=pad2,
            stride=layer.stride,
        )  # (B, d, L)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])  # (B*L, d)
    raise TypeError(f"not a tracked layer type: {type(layer).__name__}")


def _batch_input(batch: object) -> Tensor:
    """The model input of a batch: the tensor itself, or the first item of a tuple/list."""
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    if not isinstance(batch, Tensor):
        raise TypeError(f"a batch must be a tensor (or (x, y) pair), got {type(batch).__name__}")
    return batch


def collect_representations(
    model: nn.Module,
    batches: Iterable[Tensor],
    device: str | torch.device = "cpu",
    layers: Sequence[str] | None = None,
) -> dict[str, Tensor]:
    """Representation matrices R_l of the tracked layers over all samples in ``batches``.

    One forward pass in eval mode under ``torch.no_grad``; a forward pre-hook on each layer
    turns its input into rows (``layer_rows``), casts them to float64 and adds rows^T rows to
    a float64 accumulator, so the result does not depend on how the samples are batched
    (beyond float64 round-off). The model is moved to ``device`` for the pass; its device,
    its (per-module) train/eval mode and its hooks are restored afterwards, even on error.

    Args:
        model: the classifier.
        batches: model inputs (B, ...) as float tensors (an ``(x, y)`` tuple/list also works;
            its first item is used). No augmentation should be applied to them.
        device: where to run the forward pass.
        layers: names of the layers to collect (default: all of ``tracked_layers(model)``).

    Returns:
        ``{layer_name: R_l}`` with R_l a (d, d) float64 CPU tensor, exactly symmetric
        (zeros if there are no batches).

    Raises:
        ValueError: a name in ``layers`` is not a tracked layer.
    """
    tracked = tracked_layers(model)
    names = list(tracked) if layers is None else list(layers)
    unknown = [n for n in names if n not in tracked]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; tracked layers are {list(tracked)}")
    device = torch.device(device)

    first_param = next(model.parameters(), None)
    original_device = first_param.device if first_param is not None else None
    modes = {m: m.training for m in model.modules()}
    handles = []
    sums: dict[str, Tensor] = {}
    n_samples = 0
    try:
        model.to(device)
        model.eval()
        for name in names:
            layer = tracked[name]
            d = layer_dim(layer)
            sums[name] = torch.zeros(d, d, dtype=torch.float64, device=device)

            def hook(module: nn.Module, inputs: tuple[Tensor, ...], name: str = name) -> None:
                rows = layer_rows(module, inputs[0]).to(torch.float64)  # (n_rows, d)
                sums[name] += rows.T @ rows  # (d, d)

            handles.append(layer.register_forward_pre_hook(hook))
        with torch.no_grad():
            for batch in batches:
                x = _batch_input(batch).to(device)
                model(x)
                n_samples += x.shape[0]
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.train(training)
        if original_device is not None:
            model.to(original_device)
    logger.info(
        "collected representation matrices of %d layers over %d samples", len(names), n_samples
    )
    # rows^T rows is symmetric only up to BLAS round-off; make it exactly symmetric
    return {name: ((r + r.T) / 2).cpu() for name, r in sums.items()}
