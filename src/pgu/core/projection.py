"""Gradient projection onto the Residual Gradient Space (METHOD.md section 5).

For a layer with CGS basis M (d x k, orthonormal columns) its weight gradient G (out x d,
a conv kernel flattened to out x (C_in*kh*kw)) is replaced by G - (G M) M^T, the part of G
orthogonal to the retained inputs. A step along it leaves W r unchanged for every r in
span(M), i.e. the layer's response to the retained data. M M^T (d x d) is never formed:
two thin matmuls cost O(out * d * k).

A layer whose CGS is more than half its input space stores the complement N (d x (d - k))
instead (key ``layer + ".complement"``, see ``pgu.core.cgs``); its gradient becomes (G N) N^T,
the same projection at O(out * d * (d - k)). Callers pass either form through unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pgu.core.cgs import COMPLEMENT_SUFFIX
from pgu.core.representation import tracked_layers


def project_out(g: Tensor, basis: Tensor) -> Tensor:
    """Remove from each row of ``g`` its component in span(basis).

    Args:
        g: (out, d) gradient (any leading shape (..., d) works).
        basis: (d, k) with orthonormal columns; k == 0 means nothing to remove.

    Returns:
        A new tensor g - (g M) M^T, shaped like ``g``.
    """
    if basis.dim() != 2 or g.shape[-1] != basis.shape[0]:
        raise ValueError(
            f"gradient shape {tuple(g.shape)} does not match basis shape {tuple(basis.shape)}"
        )
    if basis.shape[1] == 0:
        return g.clone()
    coeffs = g @ basis  # (out, k)
    return g - coeffs @ basis.T  # (out, d)


def project_onto(g: Tensor, complement: Tensor) -> Tensor:
    """Keep of each row of ``g`` only its component in span(complement).

    With N the orthonormal complement of a CGS basis M (span(M) + span(N) = R^d), this is
    the same projection as ``project_out(g, M)``, computed from the other side.

    Args:
        g: (out, d) gradient (any leading shape (..., d) works).
        complement: (d, d - k) with orthonormal columns; d - k == 0 (a frozen layer) gives 0.

    Returns:
        A new tensor (g N) N^T, shaped like ``g``.
    """
    if complement.dim() != 2 or g.shape[-1] != complement.shape[0]:
        raise ValueError(
            f"gradient shape {tuple(g.shape)} does not match complement shape "
            f"{tuple(complement.shape)}"
        )
    if complement.shape[1] == 0:
        return torch.zeros_like(g)
    return (g @ complement) @ complement.T  # (out, d)


def layer_bases(
    model: nn.Module, bases: Mapping[str, Tensor]
) -> dict[str, tuple[nn.Module, Tensor, bool]]:
    """Resolve the keys of ``bases`` to layers: ``{layer: (module, tensor, is_complement)}``.

    A key naming a tracked layer holds its CGS basis M; ``layer + COMPLEMENT_SUFFIX`` holds
    its complement N instead (see ``pgu.core.cgs.compute_bases``).

    Raises:
        ValueError: a key names no tracked layer, or a layer has both forms.
    """
    tracked = tracked_layers(model)
    out: dict[str, tuple[nn.Module, Tensor, bool]] = {}
    unknown = []
    for key, tensor in bases.items():
        name, complement = key, False
        if key not in tracked and key.endswith(COMPLEMENT_SUFFIX):
            name, complement = key[: -len(COMPLEMENT_SUFFIX)], True
        if name not in tracked:
            unknown.append(key)
        elif name in out:
            raise ValueError(f"layer {name!r} has both a basis and a complement; keep one")
        else:
            out[name] = (tracked[name], tensor, complement)
    if unknown:
        raise ValueError(
            f"bases for unknown layers {sorted(unknown)}; tracked layers: {list(tracked)}"
        )
    return out


def project_gradients(model: nn.Module, bases: Mapping[str, Tensor]) -> None:
    """Replace the weight gradient of every tracked layer that has a basis by its projection.

    Each ``layer.weight.grad`` is viewed as (out, d) and replaced by ``project_out`` of it
    (basis M stored) or ``project_onto`` (complement N stored); the tensor is moved to the
    gradient's device and dtype. Layers without a basis, biases and all other parameters are
    left untouched; so are weights whose grad is None.

    Args:
        model: the model after ``loss.backward()``.
        bases: ``{layer: M (d, k)}`` and/or ``{layer.complement: N (d, d - k)}`` as from
            ``pgu.core.cgs.compute_bases``.

    Raises:
        ValueError: a key names no tracked layer, or its d does not match the layer.
    """
    for name, (layer, basis, complement) in layer_bases(model, bases).items():
        weight = layer.weight
        if weight.grad is None:
            continue
        g = weight.grad.reshape(weight.shape[0], -1)  # (out, d)
        m = basis.to(device=g.device, dtype=g.dtype)  # (d, k) or (d, d - k)
        if m.shape[0] != g.shape[1]:
            raise ValueError(f"layer {name!r}: basis has d={m.shape[0]}, weight has d={g.shape[1]}")
        projected = project_onto(g, m) if complement else project_out(g, m)
        weight.grad = projected.view_as(weight.grad)  # a new tensor: no copy back


def projected_parameters(model: nn.Module, bases: Mapping[str, Tensor]) -> list[nn.Parameter]:
    """The weights that unlearning updates, in ``tracked_layers`` order.

    These are the weights of the tracked layers that have a basis with k < d (a stored M
    with fewer columns than rows, or a stored N with at least one column). Biases, BatchNorm
    affine parameters, layers without a basis and frozen layers (k == d) are excluded, so an
    optimiser built on this list cannot move them.

    Raises:
        ValueError: a key names no tracked layer.
    """
    resolved = layer_bases(model, bases)
    movable = []
    for name in tracked_layers(model):
        if name not in resolved:
            continue
        layer, basis, complement = resolved[name]
        if (basis.shape[1] > 0) if complement else (basis.shape[1] < basis.shape[0]):
            movable.append(layer.weight)
    return movable
