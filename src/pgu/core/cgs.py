"""Core Gradient Space (CGS): per-layer bases of the retained inputs (METHOD.md sections 2-3).

From the representation matrices kept at training time (R_full) and those of a deletion
request (R_forget), the retain statistics are R_retain = R_full - R_forget (exact when both
come from the same model version). Each R_retain = U diag(lambda) U^T is eigen-decomposed;
with sigma_i = sqrt(lambda_i) (the singular values of the stacked input rows), the CGS basis
is M = U[:, :k], where k is the number of leading sigma whose cumulative share of sum(sigma)
is at most gamma. Gradients are later projected onto the complement of span(M), so that the
layer's response to the retained inputs stays (nearly) unchanged.

gamma = 1 means "freeze the layer": k = d by definition, the basis spans the whole input
space and the projection removes every gradient.

Bases are lean: per layer, either M (d x k) or its complement N (d x (d - k)) is kept,
whichever is smaller, and the key says which (``layer`` or ``layer + COMPLEMENT_SUFFIX``).
Storage and projection cost O(d * min(k, d - k)) instead of O(d * k), and on the CPU only
those columns of U are ever computed (:func:`spectrum_columns`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from scipy.linalg import lapack
from threadpoolctl import ThreadpoolController
from torch import Tensor

logger = logging.getLogger(__name__)

# Key suffix of a layer whose stored basis is the complement N of its CGS basis M.
COMPLEMENT_SUFFIX = ".complement"

# Slack for the "cumulative share <= gamma" test, so that a share equal to gamma up to
# round-off (e.g. 0.7 computed as 0.7000000000000001) still counts.
RATIO_TOL = 1e-9

# A negative eigenvalue below -NEGATIVE_WARN * max|lambda| is more than round-off: warn.
NEGATIVE_WARN = 1e-8


def retain_statistics(
    full: Mapping[str, Tensor],
    forget: Mapping[str, Tensor],
    device: str | torch.device | None = None,
) -> dict[str, Tensor]:
    """R_retain = R_full - R_forget per layer, symmetrised, in float64.

    Args:
        full: ``{layer: (d, d)}`` over the whole training set.
        forget: ``{layer: (d, d)}`` over the forget set, from the same model version.
        device: where to compute and return the result (None: where ``full`` is). On a GPU
            this spares the CPU three passes over every d x d matrix (SmallVGG's head: 0.5 GB);
            subtraction and halving are exact IEEE operations, so the bytes are the same.

    Returns:
        ``{layer: (d, d) float64}`` equal to (A + A^T) / 2 with A = full - forget.

    Raises:
        ValueError: the two mappings have different layers, a layer's shapes differ, a stored
            matrix is not exactly symmetric (a damaged file: every stored R is symmetrised when
            written), or a matrix has NaN or infinite entries (named: stored statistics or
            forget set).
    """
    missing = sorted(set(full) - set(forget))
    extra = sorted(set(forget) - set(full))
    if missing or extra:
        raise ValueError(
            f"layer mismatch: missing in forget statistics {missing}, "
            f"not in full statistics {extra}"
        )
    retain: dict[str, Tensor] = {}
    for name, r_full in full.items():
        r_forget = forget[name]
        if r_full.shape != r_forget.shape:
            raise ValueError(
                f"layer {name!r}: full shape {tuple(r_full.shape)} != "
                f"forget shape {tuple(r_forget.shape)}"
            )
        where = r_full.device if device is None else torch.device(device)
        stored = r_full.to(where, torch.float64)  # (d, d)
        a = stored - r_forget.to(where, torch.float64)  # (d, d)
        if not torch.isfinite(a).all():  # NaN and inf survive the subtraction: one check
            _refuse_non_finite(name, r_full, r_forget)
        if not torch.equal(stored, stored.T):  # every stored R is symmetrised when written
            raise ValueError(
                f"layer {name!r}: the stored statistics (R_full, or the previous request's "
                "R_retain) are not symmetric, as every stored matrix is written: the file is "
                "damaged. Restore it (`dvc checkout`, your backup); R_full can also be collected "
                "again (`kedro run --pipelines representation`)."
            )
        retain[name] = (a + a.T) / 2
    return retain


def _refuse_non_finite(name: str, r_full: Tensor, r_forget: Tensor) -> None:
    """Raise the error for a layer whose R_full - R_forget is not finite, naming the culprit.

    Non-finite statistics would otherwise give a basis of k = 0 (the cumulative share of a NaN
    spectrum never passes gamma): the layer would be left unprotected without a word.
    """
    if not torch.isfinite(r_full).all():
        raise ValueError(
            f"layer {name!r}: the stored statistics (R_full, or the previous request's R_retain) "
            "have NaN or infinite entries: the file is corrupt or the model that collected them "
            "diverged. Rerun `kedro run --pipelines representation` (and the requests after it)."
        )
    if not torch.isfinite(r_forget).all():
        raise ValueError(
            f"layer {name!r}: the forget set's statistics (R_forget) have NaN or infinite "
            "entries: the statistics model produces non-finite activations on these samples. "
            "Check the model file and the samples' values."
        )
    raise ValueError(
        f"layer {name!r}: R_full - R_forget overflowed float64; the statistics are unusable"
    )


SINGLE_THREAD_EIGH_MAX_D = 1024


@contextmanager
def _eigh_threads(d: int) -> Iterator[None]:
    """Run small eigendecompositions on one thread.

    Measured here (MKL, 2 cores, the other core busy): a 256×256 float64 ``eigh`` took 3 s with
    2 OpenMP threads and 0.018 s with 1, because syevd's threads spin-wait on each other. The
    matrices of small layers gain nothing from threads anyway.
    """
    before = torch.get_num_threads()
    if d <= SINGLE_THREAD_EIGH_MAX_D:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


EIGH_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _clamped(lam: Tensor, eigh_dtype: str) -> Tensor:
    """Eigenvalues (d,) descending with negative round-off clamped to 0 (a WARNING beyond it)."""
    # round-off scales with the decomposition's precision (float32: ~1e-7 of the largest)
    warn = max(NEGATIVE_WARN, 100 * torch.finfo(EIGH_DTYPES[eigh_dtype]).eps)
    if lam.numel() and lam[-1] < -warn * lam.abs().max():
        logger.warning(
            "matrix is not PSD: eigenvalue %.3e vs largest %.3e; clamping to 0",
            lam[-1].item(),
            lam[0].item(),
        )
    return lam.clamp_min(0.0)


def _symmetric(r: Tensor, eigh_dtype: str) -> Tensor:
    """(r + r^T) / 2 in float64, then cast to the decomposition's precision; checks arguments."""
    if r.dim() != 2 or r.shape[0] != r.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {tuple(r.shape)}")
    if eigh_dtype not in EIGH_DTYPES:
        raise ValueError(f"eigh_dtype must be one of {sorted(EIGH_DTYPES)}, got {eigh_dtype!r}")
    r = r.to(torch.float64)
    return ((r + r.T) / 2).to(EIGH_DTYPES[eigh_dtype])


def spectrum(r: Tensor, eigh_dtype: str = "float64") -> tuple[Tensor, Tensor]:
    """Eigen-decomposition of a symmetric PSD matrix, eigenvalues descending.

    Args:
        r: (d, d) symmetric PSD (e.g. a representation matrix), symmetrised in float64.
        eigh_dtype: precision of the decomposition itself: "float64" (default) or "float32"
            (eigenvalues below ~1e-7 of the largest are then round-off, which can move the CGS
            cut k where the spectrum is flat; on an H200 it saved only 0.01-0.15 s for all of
            SmallVGG's layers, README).

    Returns:
        ``(lam, U)``: lam (d,) float64 descending, with negative round-off clamped to 0;
        U (d, d) float64 whose column i is the eigenvector of lam[i].
    """
    sym = _symmetric(r, eigh_dtype)
    with _eigh_threads(r.shape[0]):
        lam, u = torch.linalg.eigh(sym)  # ascending
    lam, u = lam.flip(0).to(torch.float64), u.flip(1).to(torch.float64)  # (d,), (d, d) desc.
    return _clamped(lam, eigh_dtype), u


# scipy's stemr wrapper takes LAPACK's RANGE as an integer: 0 all, 1 by value, 2 by index.
STEMR_BY_INDEX = 2


@functools.cache
def _blas() -> ThreadpoolController:
    """The BLAS libraries loaded in this process (scipy's OpenBLAS among them), found once."""
    return ThreadpoolController()


def _tridiagonal_columns(
    sym: Tensor, pick: Callable[[Tensor], tuple[int, int]], eigh_dtype: str
) -> tuple[Tensor, Tensor] | None:
    """:func:`spectrum_columns` through LAPACK's steps on the CPU; None if LAPACK reports failure.

    sytrd reduces sym = Q T Q^T (T tridiagonal, Q as Householder reflectors), sterf gives every
    eigenvalue of T, stemr (MRRR) only the wanted eigenvectors z of T, and ormqr applies Q to
    them: U[:, start:stop] = Q z. ``sym`` is overwritten.
    """
    d = sym.shape[0]
    prefix = "d" if sym.dtype == torch.float64 else "s"
    sytrd, sterf, stemr = (getattr(lapack, prefix + f) for f in ("sytrd", "sterf", "stemr"))
    lwork = int(getattr(lapack, prefix + "sytrd_lwork")(d, lower=1)[0])
    a = sym.numpy().T  # a symmetric C-ordered matrix is its own Fortran-ordered transpose
    reflectors, diag, off, tau, info = sytrd(a, lower=1, lwork=lwork, overwrite_a=1)
    if info:
        return None
    lam_up, info = sterf(diag, off)  # (d,) ascending
    if info:
        return None
    lam = _clamped(torch.from_numpy(lam_up).flip(0).to(torch.float64), eigh_dtype)  # (d,)
    start, stop = pick(lam)
    n = stop - start
    if n == 0:
        return lam, torch.empty(d, 0, dtype=torch.float64)
    # descending columns [start, stop) are the ascending 1-based indices d - stop + 1 .. d - start
    found, _, z, info = stemr(
        diag, np.append(off, 0), STEMR_BY_INDEX, 0, 0, d - stop + 1, d - start
    )
    if info or found != n:
        return None
    z = torch.from_numpy(z[:, :n])  # (d, n) eigenvectors of T, ascending
    u = torch.empty_like(z)  # Q = diag(1, Q'), Q' the reflectors below the first row
    u[0] = z[0]
    u[1:] = torch.ormqr(torch.from_numpy(reflectors[1:, : d - 1]), torch.from_numpy(tau), z[1:])
    return lam, u.flip(1).to(torch.float64)  # (d, n), descending


def spectrum_columns(
    r: Tensor, pick: Callable[[Tensor], tuple[int, int]], eigh_dtype: str = "float64"
) -> tuple[Tensor, Tensor]:
    """Every eigenvalue of ``r`` but only the eigenvectors asked for: those a basis stores.

    On the CPU the eigenvectors not asked for are never formed (:func:`_tridiagonal_columns`).
    On this project's CPU, one thread, against the full eigh: digits_cnn's five layers 0.11 s
    instead of 0.15 s, SmallVGG's conv3 (d = 2,304) 1.55 s instead of 3.78 s and its head
    (d = 8,192) 75.5 s instead of 243 s; what remains is mostly the tridiagonal reduction, about
    the cost of the eigenvalues alone. On other devices, for d = 1 (LAPACK's tridiagonal
    routines need an off-diagonal) and should LAPACK report a failure, it slices the full
    :func:`spectrum`.

    Args:
        r: (d, d) symmetric PSD.
        pick: maps the eigenvalues (d,) (descending, clamped, float64) to the column range
            ``(start, stop)`` of U wanted.
        eigh_dtype: precision of the decomposition, as in :func:`spectrum`.

    Returns:
        ``(lam, cols)``: lam (d,) as from :func:`spectrum`; cols (d, stop - start) float64,
        orthonormal, spanning what ``spectrum(r)[1][:, start:stop]`` spans (each eigenvector
        of a simple eigenvalue equal up to its sign).
    """
    if r.device.type == "cpu" and r.shape[0] > 1:
        sym = _symmetric(r, eigh_dtype).contiguous()
        d = sym.shape[0]
        threads = 1 if d <= SINGLE_THREAD_EIGH_MAX_D else torch.get_num_threads()
        with _eigh_threads(d), _blas().limit(limits=threads, user_api="blas"):
            out = _tridiagonal_columns(sym, pick, eigh_dtype)
        if out is not None:
            return out
        logger.warning("LAPACK's tridiagonal eigensolver failed; using the full eigh")
    lam, u = spectrum(r, eigh_dtype)
    start, stop = pick(lam)
    return lam, u[:, start:stop]


def singular_values(r: Tensor) -> Tensor:
    """sigma = sqrt(max(lambda, 0)) of a symmetric PSD (d, d) matrix, descending, float64 (d,)."""
    if r.dim() != 2 or r.shape[0] != r.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {tuple(r.shape)}")
    r = r.to(torch.float64)
    with _eigh_threads(r.shape[0]):
        lam = torch.linalg.eigvalsh((r + r.T) / 2).flip(0)  # (d,) descending
    return lam.clamp_min(0.0).sqrt()


def basis_size(sigma: Tensor, gamma: float) -> int:
    """Number k of leading singular values kept in the CGS basis.

    k = #{i : sum_{j<=i} sigma_j / sum_j sigma_j <= gamma} (plain sigma, not sigma^2, as in
    the reference code), with a float slack of ``RATIO_TOL``. Special cases: gamma == 1 gives
    k = d (the layer is frozen, even if trailing sigma are 0); all-zero sigma with gamma < 1
    gives k = 0 (no retained inputs: nothing to protect).

    Args:
        sigma: (d,) non-negative, descending.
        gamma: energy threshold in (0, 1].

    Returns:
        k in [0, d].

    Raises:
        ValueError: gamma outside (0, 1], or sigma not 1-D, negative or not descending.
    """
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    if sigma.dim() != 1:
        raise ValueError(f"sigma must be 1-D, got shape {tuple(sigma.shape)}")
    sigma = sigma.to(torch.float64)
    if (sigma < 0).any():
        raise ValueError("sigma must be non-negative")
    if (sigma[1:] > sigma[:-1]).any():
        raise ValueError("sigma must be sorted in descending order")
    d = sigma.numel()
    if gamma == 1.0:
        return d
    total = sigma.sum()
    if total <= 0:
        return 0
    share = torch.cumsum(sigma, 0) / total  # (d,) non-decreasing, last = 1
    return int((share <= gamma + RATIO_TOL).sum().item())


def _dotted(tree: Mapping, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, leaf) pairs of a nested mapping: {a: {b: 1}} -> ("a.b", 1)."""
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _dotted(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def compute_bases(
    retain: Mapping[str, Tensor],
    gamma: float = 0.95,
    overrides: Mapping[str, float] | None = None,
    lean: bool = True,
    device: str | torch.device | None = None,
    eigh_dtype: str = "float64",
) -> tuple[dict[str, Tensor], list[dict]]:
    """CGS bases of every layer's retain statistics, each stored in its smaller form.

    The CGS basis is M_l = U[:, :k_l] (d, k); its complement, the Residual Gradient Space, is
    N_l = U[:, k_l:] (d, d - k). Either one determines the projection (G - (G M) M^T equals
    (G N) N^T), so with ``lean`` each layer stores whichever has fewer columns: M under the
    key ``layer``, or N under ``layer + COMPLEMENT_SUFFIX`` (on a tie, M). A frozen layer
    (k = d) thus stores an empty (d, 0) complement. ``pgu.core.projection`` reads both forms.

    Args:
        retain: ``{layer: R_retain (d, d)}``.
        gamma: default threshold in (0, 1]; 1 freezes a layer.
        overrides: per-layer thresholds ``{layer: gamma_l}``; nested mappings are read as
            dotted names (``--params=cgs.overrides.features.conv1=1.0`` reaches Kedro as
            ``{features: {conv1: 1.0}}``).
        lean: store the smaller of M and N (False: always M, under the key ``layer``).
        device: where to eigen-decompose (e.g. "cuda"); None: where each matrix is.
        eigh_dtype: precision of the eigendecompositions (see :func:`spectrum`).

    Returns:
        ``(bases, summary)``: bases ``{key: (d, k) or (d, d - k) float32 contiguous}`` with
        orthonormal columns, on ``device``; summary, one dict per layer in ``retain`` order
        with keys ``layer``, ``d``, ``k`` (the CGS dimension, whichever form is stored),
        ``k_over_d``, ``gamma``, ``frozen`` (k == d, i.e. gamma == 1) and ``sigma`` (the
        singular values, descending, as a list).

    Raises:
        ValueError: an override names a layer not in ``retain``, or a gamma is invalid.
    """
    overrides = dict(_dotted(overrides or {}))
    unknown = sorted(set(overrides) - set(retain))
    if unknown:
        raise ValueError(f"gamma overrides for unknown layers {unknown}; valid: {list(retain)}")
    bases: dict[str, Tensor] = {}
    summary: list[dict] = []
    for name, r in retain.items():
        g = float(overrides.get(name, gamma))
        if not torch.isfinite(r).all():
            raise ValueError(
                f"layer {name!r}: the representation matrix has NaN or infinite entries, so it "
                "has no spectrum to cut; recollect the statistics (`kedro run --pipelines "
                "representation`) or check the model that produced them"
            )

        def stored(lam: Tensor, g: float = g) -> tuple[int, int]:
            # the complement N = U[:, k:] when it is the smaller form, else M = U[:, :k]
            d, k = lam.numel(), basis_size(lam.sqrt(), g)
            return (k, d) if lean and d - k < k else (0, k)

        r = r if device is None else r.to(device)
        lam, cols = spectrum_columns(r, stored, eigh_dtype)  # (d,), (d, k) or (d, d - k)
        sigma = lam.sqrt()
        k = basis_size(sigma, g)
        d = lam.numel()
        key = name + COMPLEMENT_SUFFIX if lean and d - k < k else name  # as stored() chose
        bases[key] = cols.to(torch.float32).contiguous()
        summary.append(
            {
                "layer": name,
                "d": d,
                "k": k,
                "k_over_d": k / d if d else 0.0,
                "gamma": g,
                "frozen": k == d,
                "sigma": sigma.cpu().tolist(),  # descending, for spectrum plots
            }
        )
        logger.info("CGS %s: gamma %.3f keeps k=%d of d=%d", name, g, k, d)
    return bases, summary


def bases_from_params(
    retain: Mapping[str, Tensor], params: Mapping, device: str | torch.device | None = None
) -> tuple[dict[str, Tensor], list[dict]]:
    """:func:`compute_bases` with the ``cgs`` parameter block (gamma, overrides, eigh_dtype)."""
    return compute_bases(
        retain,
        params["gamma"],
        params.get("overrides"),
        device=device,
        eigh_dtype=params.get("eigh_dtype", "float64"),
    )


def basis_bytes(bases: Mapping[str, Tensor]) -> int:
    """Bytes the stored bases take (their elements; no file header)."""
    return sum(b.numel() * b.element_size() for b in bases.values())
