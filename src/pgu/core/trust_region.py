"""Trust Region Gradient Projection (TRGP) on one layer (METHOD.md section 7).

A Conv2d/Linear layer with weight W (out x d after flattening a kernel) and CGS basis M (d x k,
orthonormal columns) gets a learnable k x k scale S and computes with the effective weight

    W_eff = W + W M (S - I) M^T        (= W (I - M M^T) + W M S M^T)

S starts at the identity, where W_eff is W itself, so the layer computes exactly what it did.
The two kinds of update move W_eff in complementary subspaces:

- an update of S changes W_eff by W M dS M^T: each row of the change lies in span(M), so the
  layer may re-scale its response inside the retained input space;
- W itself is updated with projected gradients (G - G M M^T, ``pgu.core.projection``), so
  dW M = 0 and the change dW + dW M (S - I) M^T = dW lies outside span(M).

:class:`TrustRegion` holds S and M and, once :meth:`TrustRegion.install` ed, replaces the
layer's output through a forward hook. The model's module names, state-dict keys and the
weight's ``.grad`` stay where the rest of the code expects them (bases, projection and
checkpoints keep working). :meth:`TrustRegion.fold` writes W_eff into W and resets S to I, so
the model is a plain registry model again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from pgu.core.representation import layer_dim, tracked_layers


def effective_weight(weight: Tensor, basis: Tensor, scale: Tensor) -> Tensor:
    """W_eff = W + W M (S - I) M^T, shaped like ``weight``.

    Args:
        weight: (out, d) or a conv kernel (out, C_in, kh, kw) with d = C_in * kh * kw.
        basis: (d, k) with orthonormal columns (k may be 0).
        scale: (k, k).

    Returns:
        A tensor shaped like ``weight``; exactly ``weight`` (bit for bit) when S = I.
    """
    w = weight.reshape(weight.shape[0], -1)  # (out, d)
    k = basis.shape[1]
    if basis.shape[0] != w.shape[1] or scale.shape != (k, k):
        raise ValueError(
            f"shapes do not fit: weight {tuple(weight.shape)}, basis {tuple(basis.shape)}, "
            f"scale {tuple(scale.shape)}"
        )
    eye = torch.eye(k, dtype=scale.dtype, device=scale.device)
    delta = (w @ basis) @ (scale - eye) @ basis.T  # (out, d), exactly 0 when S = I
    return (w + delta).view_as(weight)


def final_layer_name(model: nn.Module) -> str:
    """Name of the last Conv2d/Linear layer of ``model`` (every registry model's classifier)."""
    tracked = tracked_layers(model)
    if not tracked:
        raise ValueError("the model has no Conv2d or Linear layer")
    return list(tracked)[-1]


class TrustRegion(nn.Module):
    """The scale S of one layer's TRGP re-parametrisation.

    Args:
        layer: the ``nn.Linear`` or ``nn.Conv2d`` (groups 1) whose weight is re-parametrised;
            it is referenced, not copied.
        basis: (d, k) CGS basis of the layer (orthonormal columns).

    Attributes:
        scale: the learnable (k, k) S, initialised to the identity.
        basis: the (d, k) buffer M.
    """

    def __init__(self, layer: nn.Module, basis: Tensor) -> None:
        super().__init__()
        if not isinstance(layer, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"TRGP needs a Linear or Conv2d layer, got {type(layer).__name__}")
        if isinstance(layer, nn.Conv2d) and layer.groups != 1:
            raise NotImplementedError("TRGP on grouped convolutions is not supported")
        if basis.dim() != 2 or basis.shape[0] != layer_dim(layer):
            raise ValueError(f"basis {tuple(basis.shape)} does not fit d={layer_dim(layer)}")
        w = layer.weight
        # A plain attribute, not a submodule: this module's parameters() is S alone.
        object.__setattr__(self, "layer", layer)
        self.register_buffer("basis", basis.detach().to(device=w.device, dtype=w.dtype))
        self.scale = nn.Parameter(torch.eye(basis.shape[1], device=w.device, dtype=w.dtype))
        self._handle: RemovableHandle | None = None

    def effective_weight(self) -> Tensor:
        """W_eff of the layer (differentiable in W and S), shaped like its weight."""
        return effective_weight(self.layer.weight, self.basis, self.scale)

    def forward(self, x: Tensor) -> Tensor:
        """The layer's output computed with W_eff (and its own bias) on input ``x``."""
        w = self.effective_weight()
        if isinstance(self.layer, nn.Linear):
            return F.linear(x, w, self.layer.bias)
        return self.layer._conv_forward(x, w, self.layer.bias)

    def install(self) -> TrustRegion:
        """Make the layer compute with W_eff inside its model (until :meth:`remove`)."""
        if self._handle is None:
            # A forward hook's return value replaces the layer's output.
            self._handle = self.layer.register_forward_hook(lambda _m, args, _out: self(args[0]))
        return self

    def remove(self) -> None:
        """Undo :meth:`install`; the layer computes with W again."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @torch.no_grad()
    def fold(self) -> None:
        """W <- W_eff and S <- I: the plain layer now computes what the re-parametrised one did."""
        w = self.effective_weight()
        self.layer.weight.copy_(w)
        self.scale.copy_(torch.eye(self.scale.shape[0], dtype=w.dtype, device=w.device))
