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
``collect_representations_sharded`` does the same over a whole sample set in fixed chunks that
several processes (``torchrun``) can share, with bytes that do not depend on how many do.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from pgu.core import distributed
from pgu.core.data import SampleSet

logger = logging.getLogger(__name__)

TRACKED_TYPES = (nn.Conv2d, nn.Linear)

# Torch threads for collection on the CPU: with more, MKL splits the float64 products
# differently and the bytes (hence lineage hashes) would depend on the machine's core count.
DEFAULT_CPU_THREADS = 1

# Device types whose conv rows are built kernel-major in one float64 pass (``layer_gram``);
# elsewhere they come from ``layer_rows``. On an H200, SmallVGG's statistics over 10,000
# samples took 0.96 s this way against 1.04-1.12 s from ``layer_rows`` (bench/profile_request.py,
# bench/results/h200-2026-11-27/run4).
KERNEL_MAJOR_DEVICES = ("cpu", "cuda")


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


def _check_conv(layer: nn.Conv2d, a: Tensor) -> None:
    """Reject the convs and inputs whose rows this module does not form."""
    if layer.groups != 1:
        raise NotImplementedError("representation rows of grouped convs are not supported")
    if layer.padding_mode != "zeros":
        raise NotImplementedError(
            f"padding_mode {layer.padding_mode!r} is not supported, only 'zeros'"
        )
    if a.dim() != 4:
        raise ValueError(f"conv input must be (B, C, H, W), got shape {tuple(a.shape)}")


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
        _check_conv(layer, a)
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


def _conv_rows_kernel_major(layer: nn.Conv2d, a: Tensor) -> Tensor | None:
    """A conv's rows in float64 with their columns ordered (kh, kw, C_in), or None if empty.

    The same rows as ``layer_rows`` up to a permutation of the columns: entry (i * kw + j) * C
    + c here is entry c * kh * kw + i * kw + j there. Built from the padded input in
    channels-last order, each kernel offset copies runs of C_in contiguous values, in one pass
    that also casts to float64; ``layer_rows`` writes the patches three times (unfold, the
    transpose to rows, the cast).
    """
    _check_conv(layer, a)
    pad4, (ph, pw) = _conv_padding(layer)
    left, right, top, bottom = pad4[0] + pw, pad4[1] + pw, pad4[2] + ph, pad4[3] + ph
    x = F.pad(a, (left, right, top, bottom)).to(torch.float64)
    x = x.permute(0, 2, 3, 1).contiguous()  # (B, Hp, Wp, C)
    b, hp, wp, c = x.shape
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    ho, wo = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    if ho < 1 or wo < 1:
        return None
    rows = torch.empty(b, ho, wo, kh * kw, c, dtype=torch.float64, device=a.device)
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dh, j * dw
            rows[:, :, :, i * kw + j] = x[
                :, y0 : y0 + sh * (ho - 1) + 1 : sh, x0 : x0 + sw * (wo - 1) + 1 : sw
            ]
    return rows.view(b * ho * wo, kh * kw * c)  # (B*L, d)


def layer_gram(layer: nn.Module, a: Tensor) -> Tensor:
    """rows^T rows (d, d) in float64 for the rows ``layer_rows(layer, a)``.

    On the CPU and CUDA a conv's rows are built kernel-major (:func:`_conv_rows_kernel_major`)
    and the product's rows and columns are put back in ``layer_rows`` order afterwards, a
    (d, d) gather. Each entry is the same sum of the same float64 products; on this project's
    CPU the result is the same bytes, and collecting digits_cnn's matrices took about a sixth less
    time (400 samples: 0.38 s before, 0.32 s after; bench/depoison.py). CUDA does the same
    (about a tenth less time on an H200). On other device types (not in
    ``KERNEL_MAJOR_DEVICES``) the rows come from ``layer_rows``.
    """
    if isinstance(layer, nn.Conv2d) and a.device.type in KERNEL_MAJOR_DEVICES:
        rows = _conv_rows_kernel_major(layer, a)  # (n, K * C), K = kh * kw
        if rows is not None:
            k, c = layer.kernel_size[0] * layer.kernel_size[1], a.shape[1]
            # column c' * K + o of layer_rows is column o * C + c' of the kernel-major rows
            order = torch.arange(k * c, device=a.device).view(k, c).T.reshape(-1)  # (d,)
            return gram(rows)[order][:, order]
    return gram(layer_rows(layer, a).to(torch.float64))


def _batch_input(batch: object) -> Tensor:
    """The model input of a batch: the tensor itself, or the first item of a tuple/list."""
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    if not isinstance(batch, Tensor):
        raise TypeError(f"a batch must be a tensor (or (x, y) pair), got {type(batch).__name__}")
    return batch


def _to_device(x: Tensor, device: torch.device) -> Tensor:
    """``x`` on ``device``, copied exactly. A host tensor bound for CUDA goes through pinned memory
    without blocking, so the host normalises the next chunk while the GPU works on this one (a
    pageable copy waits for the GPU: on an H200, statistics over 10,000 samples read from host
    memory took 0.83 s, against about 0.5 s with the samples already on the GPU)."""
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def _resolve_layers(model: nn.Module, layers: Sequence[str] | None) -> dict[str, nn.Module]:
    """The tracked layers to collect, by name; an unknown name is an error."""
    tracked = tracked_layers(model)
    names = list(tracked) if layers is None else list(layers)
    unknown = [n for n in names if n not in tracked]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; tracked layers are {list(tracked)}")
    return {n: tracked[n] for n in names}


# Below this width a Gram matrix is computed in one product (splitting saves nothing).
GRAM_SPLIT_MIN_D = 64
# Nested splits at most, per device type (others: GRAM_SPLIT_DEPTH_ELSEWHERE). On the CPU 64 is
# in effect unlimited (GRAM_SPLIT_MIN_D stops the splits first): 20-23% faster than one split
# for SmallVGG's convs there. On a GPU only one split has been timed (H200, 2026-11-27); the
# narrow products of deeper splits may run far below its float64 peak, so one split stays until
# bench/profile_request.py, which times depths 0, 1, 2 and 64 side by side, has run on one.
GRAM_SPLIT_MAX_DEPTH = {"cpu": 64}
GRAM_SPLIT_DEPTH_ELSEWHERE = 1
# On the CPU, with fewer rows than width / GRAM_SPLIT_MAX_WIDTH_PER_ROW the product is bound by
# writing its d x d output, not by flops, and one GEMM is fastest (SmallVGG's head: 256 rows,
# d = 8192: 1.3 s against 1.6 s split, on this project's CPU). A GPU's float64 rate is scarcer
# than its memory bandwidth, so there the split always pays.
GRAM_SPLIT_MAX_WIDTH_PER_ROW = 8


def gram(rows: Tensor, depth: int | None = None) -> Tensor:
    """rows^T rows (d, d) for rows (n, d), computing only the blocks on and below the diagonal.

    With rows = [A | B] split at h = d // 2, the blocks A^T A, B^T A and B^T B are computed and
    the upper block is the transpose of B^T A; A^T A and B^T B are split the same way, down to
    width ``GRAM_SPLIT_MIN_D`` or ``depth`` splits (default: the device's, from
    ``GRAM_SPLIT_MAX_DEPTH``). Split L times deep this costs (1 + 2^-L) / 2 of one GEMM's flops
    (62.5% at depth 2, against 75% for one split): SmallVGG's conv products (65,536 x 1,152 and
    16,384 x 2,304 per batch) took 20-23% less time than with one split on this project's CPU.
    On the CPU a short, wide ``rows`` (n < d / ``GRAM_SPLIT_MAX_WIDTH_PER_ROW``) is one GEMM.
    Float64 products of float32 inputs are exact, so the result differs from ``rows.T @ rows``
    only in the order of float64 additions (on this CPU, MKL gives the same bytes).
    """
    n, d = rows.shape
    if depth is None:
        depth = GRAM_SPLIT_MAX_DEPTH.get(rows.device.type, GRAM_SPLIT_DEPTH_ELSEWHERE)
    short_wide = rows.device.type == "cpu" and n * GRAM_SPLIT_MAX_WIDTH_PER_ROW < d
    if d < GRAM_SPLIT_MIN_D or short_wide or depth < 1:
        return rows.T @ rows
    h = d // 2
    a, b = rows[:, :h], rows[:, h:]  # (n, h), (n, d - h)
    out = torch.empty(d, d, dtype=rows.dtype, device=rows.device)
    out[:h, :h] = gram(a, depth - 1)
    out[h:, :h] = b.T @ a
    out[h:, h:] = gram(b, depth - 1)
    out[:h, h:] = out[h:, :h].T
    return out


@contextmanager
def _row_products(
    model: nn.Module,
    layers: dict[str, nn.Module],
    device: torch.device,
    cpu_threads: int | None,
) -> Iterator[dict[str, Tensor]]:
    """Hooks that leave, after each forward pass, ``{layer: rows^T rows}`` (d, d) float64.

    The yielded dict is filled by the pass (a layer called twice adds both products) and must
    be cleared by the caller before the next one. Inside the context the model is on
    ``device`` in eval mode; on CUDA, TF32 is off so the forward pass is plain float32 (a
    sample's rows must not depend on which other samples share its batch beyond fp32 noise,
    or R_full - R_forget drifts from R_retain); on the CPU torch uses ``cpu_threads`` threads.
    Everything is restored on exit, even on error.
    """
    first_param = next(model.parameters(), None)
    original_device = first_param.device if first_param is not None else None
    modes = {m: m.training for m in model.modules()}
    threads = torch.get_num_threads()
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    products: dict[str, Tensor] = {}
    handles = []

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], name: str) -> None:
        p = layer_gram(module, inputs[0])  # (d, d)
        products[name] = products[name] + p if name in products else p

    try:
        model.to(device)
        model.eval()
        if device.type == "cpu" and cpu_threads is not None:
            torch.set_num_threads(cpu_threads)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        for name, layer in layers.items():
            handles.append(layer.register_forward_pre_hook(partial(hook, name=name)))
        yield products
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.train(training)
        if original_device is not None:
            model.to(original_device)
        torch.set_num_threads(threads)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def _symmetric(sums: dict[str, Tensor], to_cpu: bool = True) -> dict[str, Tensor]:
    """The finished matrices: exactly symmetric, checked finite, on the CPU unless told not to.

    rows^T rows is symmetric only up to BLAS round-off; an add and a halving make it exactly
    symmetric (exact IEEE operations, the same bytes on any device).

    Raises:
        ValueError: a layer's matrix has NaN or infinite entries (it would later cut that
            layer's basis to nothing without a word).
    """
    for name, r in sums.items():
        if not torch.isfinite(r).all():
            raise ValueError(
                f"layer {name!r}: the representation matrix has NaN or infinite entries: the "
                "model's input to this layer is not finite on these samples (a diverged or "
                "corrupt model, or non-finite data). Fix the model or the data and collect again."
            )
    out = {name: (r + r.T) / 2 for name, r in sums.items()}
    return {name: r.cpu() for name, r in out.items()} if to_cpu else out


def collect_representations(
    model: nn.Module,
    batches: Iterable[Tensor],
    device: str | torch.device = "cpu",
    layers: Sequence[str] | None = None,
    cpu_threads: int | None = DEFAULT_CPU_THREADS,
    keep_on_device: bool = False,
) -> dict[str, Tensor]:
    """Representation matrices R_l of the tracked layers over all samples in ``batches``.

    One forward pass in eval mode under ``torch.no_grad``; a forward pre-hook on each layer
    adds rows^T rows of its input's rows (``layer_gram``: those of ``layer_rows``, in float64)
    to a float64 accumulator, so the result does not depend on how the samples are batched
    (beyond float64 round-off). The model is moved to ``device`` for the pass; its device,
    its (per-module) train/eval mode and its hooks are restored afterwards, even on error.

    Args:
        model: the classifier.
        batches: model inputs (B, ...) as float tensors (an ``(x, y)`` tuple/list also works;
            its first item is used). No augmentation should be applied to them.
        device: where to run the forward pass.
        layers: names of the layers to collect (default: all of ``tracked_layers(model)``).
        cpu_threads: torch threads on the CPU during the pass (None: leave torch's setting).
            The default 1 makes the bytes independent of the machine's core count: MKL
            splits the float64 products differently with more threads.
        keep_on_device: return the matrices on ``device`` instead of the CPU, for a caller
            that uses them there at once (a request subtracts R_forget from R_retain on the
            GPU: SmallVGG's head matrix is 0.5 GB per trip).

    Returns:
        ``{layer_name: R_l}`` with R_l a (d, d) float64 tensor on the CPU (or ``device``),
        exactly symmetric (zeros if there are no batches).

    Raises:
        ValueError: a name in ``layers`` is not a tracked layer.
    """
    chosen = _resolve_layers(model, layers)
    device = torch.device(device)
    sums = {
        name: torch.zeros(layer_dim(layer), layer_dim(layer), dtype=torch.float64, device=device)
        for name, layer in chosen.items()
    }
    n_samples = 0
    with _row_products(model, chosen, device, cpu_threads) as products, torch.no_grad():
        for batch in tqdm(batches, desc="collect", unit="batch", disable=None, leave=False):
            x = _to_device(_batch_input(batch), device)
            products.clear()
            model(x)
            for name, p in products.items():
                sums[name] += p
            n_samples += x.shape[0]
    logger.info(
        "collected representation matrices of %d layers over %d samples", len(sums), n_samples
    )
    return _symmetric(sums, to_cpu=not keep_on_device)


def collect_representations_sharded(
    model: nn.Module,
    data: SampleSet | Tensor,
    chunk_size: int = 256,
    device: str | torch.device = "cpu",
    layers: Sequence[str] | None = None,
    cpu_threads: int | None = DEFAULT_CPU_THREADS,
) -> dict[str, Tensor]:
    """R_l over every sample of ``data``, shared among processes, the same bytes for any number.

    The samples are cut, in their stored order, into chunks of ``chunk_size``; each chunk is
    one forward pass whose float64 products form the chunk's partial sums, and the partial
    sums are added in chunk order (``pgu.core.distributed.ordered_chunk_sum``). Without a
    process group (or with one process) this is exactly ``collect_representations(model,
    data.batches(chunk_size), ...)``, byte for byte; with W processes each computes every W-th
    chunk and all of them return the same result. The bytes depend on ``chunk_size``, never on
    the number of processes (at a fixed ``cpu_threads`` on the CPU, on the same hardware).

    Args:
        model: the classifier (the same weights on every process).
        data: a SampleSet (normalised inputs are taken chunk by chunk) or float inputs (N, ...).
        chunk_size: samples per chunk and per forward pass.
        device: where to run (under ``torchrun`` with CUDA, "cuda" is this process's GPU).
        layers: names of the layers to collect (default: all tracked layers).
        cpu_threads: as in :func:`collect_representations`.

    Returns:
        ``{layer_name: R_l}``, (d, d) float64 CPU tensors, exactly symmetric, on every process.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    chosen = _resolve_layers(model, layers)
    device = torch.device(device)
    n = len(data)
    n_chunks = math.ceil(n / chunk_size)
    zeros = {
        name: torch.zeros(layer_dim(layer), layer_dim(layer), dtype=torch.float64, device=device)
        for name, layer in chosen.items()
    }
    bar = tqdm(
        total=math.ceil(n_chunks / distributed.world_size()),
        desc="collect",
        unit="chunk",
        disable=None if distributed.is_main_process() else True,
        leave=False,
    )

    def inputs(c: int) -> Tensor:
        rows = slice(c * chunk_size, min(n, (c + 1) * chunk_size))
        return data.inputs(rows) if isinstance(data, SampleSet) else data[rows]

    with _row_products(model, chosen, device, cpu_threads) as products, torch.no_grad():

        def chunk_sum(c: int) -> dict[str, Tensor]:
            products.clear()
            model(_to_device(inputs(c), device))
            bar.update()
            return {name: products.get(name, zero) for name, zero in zeros.items()}

        sums = distributed.ordered_chunk_sum(n_chunks, chunk_sum, zeros)
    bar.close()
    logger.info(
        "collected representation matrices of %d layers over %d samples in %d chunks "
        "(%d process(es))",
        len(sums),
        n,
        n_chunks,
        distributed.world_size(),
    )
    return _symmetric(sums)
