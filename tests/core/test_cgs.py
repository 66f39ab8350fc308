"""Tests for pgu.core.cgs: spectra, the basis-size rule, bases and retain statistics."""

import pytest
import torch

from pgu.core.cgs import (
    basis_size,
    compute_bases,
    retain_statistics,
    singular_values,
    spectrum,
    spectrum_columns,
)


def random_psd(d: int, rank: int, seed: int = 0) -> torch.Tensor:
    """A (d, d) float64 PSD matrix of the given rank: A^T A with A (rank, d)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(rank, d, generator=g, dtype=torch.float64)
    return a.T @ a


def test_spectrum_reconstructs_and_is_descending_nonnegative():
    r = random_psd(12, 7)
    lam, u = spectrum(r)
    assert lam.shape == (12,) and u.shape == (12, 12)
    assert (lam[:-1] >= lam[1:]).all()
    assert (lam >= 0).all()
    torch.testing.assert_close(u @ torch.diag(lam) @ u.T, r, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(u.T @ u, torch.eye(12, dtype=torch.float64), atol=1e-12, rtol=0)
    # rank 7: the trailing eigenvalues are round-off, clamped to exactly >= 0
    assert lam[7:].max() <= 1e-10 * lam[0]


def test_spectrum_clamps_small_negative_round_off():
    r = torch.diag(torch.tensor([3.0, 1.0, -1e-14], dtype=torch.float64))
    lam, _ = spectrum(r)
    assert lam.tolist() == [3.0, 1.0, 0.0]


def test_singular_values_are_sqrt_of_eigenvalues():
    r = random_psd(9, 9, seed=1)
    lam, _ = spectrum(r)
    torch.testing.assert_close(singular_values(r), lam.sqrt())


def spread_psd(d: int, seed: int = 0) -> torch.Tensor:
    """A (d, d) full-rank PSD matrix whose eigenvalues span several decades, like R_l's."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(2 * d, d, generator=g, dtype=torch.float64)
    a = a * torch.logspace(0, -3, d, dtype=torch.float64)
    return a.T @ a


@pytest.mark.parametrize("eigh_dtype", ["float64", "float32"])
@pytest.mark.parametrize(("start", "stop"), [(0, 5), (31, 40), (12, 27), (0, 40), (7, 7)])
def test_spectrum_columns_match_the_full_decomposition(eigh_dtype, start, stop):
    # the CPU path (tridiagonal reduction, MRRR for the wanted vectors only, back-transform)
    # against torch's full eigh: same eigenvalues, the same columns up to their signs
    r = spread_psd(40)
    tol = 1e-10 if eigh_dtype == "float64" else 2e-4
    lam_full, u = spectrum(r, eigh_dtype)
    seen = []

    def pick(lam):
        seen.append(lam)
        return start, stop

    lam, cols = spectrum_columns(r, pick, eigh_dtype)
    assert lam.dtype == cols.dtype == torch.float64 and cols.shape == (40, stop - start)
    torch.testing.assert_close(seen[0], lam)  # pick saw the eigenvalues that were returned
    torch.testing.assert_close(lam, lam_full, rtol=tol, atol=tol * lam_full[0])
    assert (lam[:-1] >= lam[1:]).all()
    eye = torch.eye(stop - start, dtype=torch.float64)
    torch.testing.assert_close(cols.T @ cols, eye, atol=tol, rtol=0)
    if eigh_dtype == "float64":  # (float32 vectors of eigenvalues closer than ~1e-7 of the
        # largest are round-off in either solver: only the residual below is defined there)
        signs = torch.sign((cols * u[:, start:stop]).sum(0))  # (n,) +-1
        torch.testing.assert_close(cols * signs, u[:, start:stop], atol=1e-8, rtol=0)
    # each column is an eigenvector of its eigenvalue: r v = lambda v
    residual = r @ cols - cols * lam[start:stop]
    assert residual.norm() <= 100 * tol * lam[0]


def test_spectrum_columns_of_a_rank_deficient_matrix_span_its_null_space():
    # the complement of a rank-7 matrix is its whole null space: a unique subspace, however
    # the solver chooses the 13 vectors inside it
    r = random_psd(20, 7, seed=3)
    lam, cols = spectrum_columns(r, lambda lam: (7, 20))
    assert cols.shape == (20, 13)
    torch.testing.assert_close(
        cols.T @ cols, torch.eye(13, dtype=torch.float64), atol=1e-12, rtol=0
    )
    assert (r @ cols).abs().max() <= 1e-10 * lam[0]
    assert lam[7:].max() <= 1e-10 * lam[0]


def test_spectrum_columns_falls_back_to_the_full_eigh(monkeypatch, caplog):
    from pgu.core import cgs

    r = spread_psd(16, seed=2)
    monkeypatch.setattr(cgs, "_tridiagonal_columns", lambda *args: None)  # LAPACK "failed"
    lam, cols = spectrum_columns(r, lambda lam: (3, 9))
    lam_full, u = spectrum(r)
    assert torch.equal(lam, lam_full) and torch.equal(cols, u[:, 3:9])
    assert "using the full eigh" in caplog.text


def test_spectrum_columns_are_deterministic():
    r = spread_psd(64, seed=4)
    a = spectrum_columns(r, lambda lam: (50, 64))
    b = spectrum_columns(r.clone(), lambda lam: (50, 64))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert torch.equal(r, spread_psd(64, seed=4))  # the input is never overwritten


@pytest.mark.parametrize(
    ("gamma", "k"),
    [(0.3, 0), (0.4, 1), (0.5, 1), (0.7, 2), (0.75, 2), (0.9, 3), (0.95, 3), (0.999, 3), (1.0, 4)],
)
def test_basis_size_rule_on_hand_made_sigma(gamma, k):
    # cumulative shares 0.4, 0.7, 0.9, 1.0; a share equal to gamma counts
    sigma = torch.tensor([4.0, 3.0, 2.0, 1.0])
    assert basis_size(sigma, gamma) == k


def test_basis_size_uses_sigma_not_sigma_squared():
    # sigma shares: 0.5, 1.0  -> gamma 0.6 keeps 1; with sigma^2 (0.8, 1.0) it would keep 0
    assert basis_size(torch.tensor([1.0, 1.0]), 0.6) == 1
    # sigma^2 shares would be 0.8, 1.0 for sigma (2, 1); sigma shares are 0.667, 1.0
    assert basis_size(torch.tensor([2.0, 1.0]), 0.7) == 1
    assert basis_size(torch.tensor([2.0, 1.0]), 0.65) == 0


def test_basis_size_gamma_one_freezes_even_with_zero_tail():
    sigma = torch.tensor([5.0, 2.0, 0.0, 0.0])
    assert basis_size(sigma, 1.0) == 4
    assert basis_size(sigma, 0.99) == 1  # shares 5/7, 1, 1, 1


def test_basis_size_all_zero_sigma():
    assert basis_size(torch.zeros(5), 0.95) == 0
    assert basis_size(torch.zeros(5), 1.0) == 5


@pytest.mark.parametrize("gamma", [0.0, -0.1, 1.0001, 2.0])
def test_basis_size_rejects_bad_gamma(gamma):
    with pytest.raises(ValueError, match="gamma"):
        basis_size(torch.tensor([1.0, 0.5]), gamma)


def test_basis_size_rejects_unsorted_or_negative_sigma():
    with pytest.raises(ValueError, match="descending"):
        basis_size(torch.tensor([1.0, 2.0]), 0.9)
    with pytest.raises(ValueError, match="non-negative"):
        basis_size(torch.tensor([1.0, -0.5]), 0.9)


def test_compute_bases_orthonormal_and_summary():
    retain = {"a": random_psd(10, 10, seed=2), "b": random_psd(6, 3, seed=3)}
    # lean=False always stores M; the lean choice is tested in test_lean_bases.py
    bases, summary = compute_bases(retain, gamma=0.8, lean=False)
    assert list(bases) == ["a", "b"]
    for name, m in bases.items():
        k = m.shape[1]
        assert m.dtype == torch.float32 and m.is_contiguous()
        assert m.shape[0] == retain[name].shape[0]
        torch.testing.assert_close(m.T @ m, torch.eye(k), atol=1e-5, rtol=0)
        # the kept directions are the leading eigenvectors
        lam, u = spectrum(retain[name])
        assert k == basis_size(lam.sqrt(), 0.8)
        torch.testing.assert_close(
            (m.double() @ m.double().T), u[:, :k] @ u[:, :k].T, atol=1e-6, rtol=0
        )
    assert [s["layer"] for s in summary] == ["a", "b"]
    for s in summary:
        assert set(s) == {"layer", "d", "k", "k_over_d", "gamma", "frozen", "sigma"}
        assert s["sigma"] == sorted(s["sigma"], reverse=True)
        assert s["k"] == bases[s["layer"]].shape[1]
        assert s["k_over_d"] == pytest.approx(s["k"] / s["d"])
        assert s["gamma"] == 0.8 and s["frozen"] is False
    assert 0 < summary[0]["k"] < 10
    assert summary[1]["k"] <= 3  # rank 3: the null space is never kept for gamma < 1


def test_compute_bases_overrides_and_freeze():
    retain = {"a": random_psd(8, 8, seed=4), "b": random_psd(5, 5, seed=5)}
    bases, summary = compute_bases(retain, gamma=0.5, overrides={"b": 1.0}, lean=False)
    assert bases["b"].shape == (5, 5)
    assert summary[1]["frozen"] is True and summary[1]["gamma"] == 1.0
    assert summary[0]["gamma"] == 0.5 and bases["a"].shape[1] < 8
    torch.testing.assert_close(bases["b"] @ bases["b"].T, torch.eye(5), atol=1e-5, rtol=0)


def test_nested_overrides_are_read_as_dotted_layer_names():
    """Kedro turns --params=cgs.overrides.features.conv1=1.0 into {features: {conv1: 1.0}}."""
    retain = {"features.conv1": random_psd(6, 6, seed=6), "fc": random_psd(4, 4, seed=7)}
    nested = compute_bases(retain, gamma=0.5, overrides={"features": {"conv1": 1.0}})
    flat = compute_bases(retain, gamma=0.5, overrides={"features.conv1": 1.0})
    assert nested[1][0]["frozen"] and not nested[1][1]["frozen"]
    for key in flat[0]:
        assert torch.equal(nested[0][key], flat[0][key])
    with pytest.raises(ValueError, match=r"unknown layers \['features.conv9'\]"):
        compute_bases(retain, overrides={"features": {"conv9": 1.0}})


def test_compute_bases_unknown_override_lists_layers():
    with pytest.raises(ValueError, match="'a'"):
        compute_bases({"a": random_psd(3, 3)}, overrides={"zz": 0.9})


def test_compute_bases_zero_matrix_gives_empty_basis():
    bases, summary = compute_bases({"a": torch.zeros(4, 4, dtype=torch.float64)}, gamma=0.95)
    assert bases["a"].shape == (4, 0)
    assert summary[0]["k"] == 0


def test_retain_statistics_subtracts_and_symmetrises():
    full = {"a": random_psd(4, 4, seed=6), "b": random_psd(3, 3, seed=7).float()}
    forget = {"a": random_psd(4, 1, seed=8), "b": random_psd(3, 1, seed=9).float()}
    forget["a"][0, 1] += 1e-3  # slight asymmetry is averaged away
    retain = retain_statistics(full, forget)
    for name in full:
        assert retain[name].dtype == torch.float64
        torch.testing.assert_close(retain[name], retain[name].T, atol=0, rtol=0)
    expected = full["a"] - forget["a"]
    torch.testing.assert_close(retain["a"], (expected + expected.T) / 2)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:  # exact IEEE operations: the same bits wherever they run
        moved = retain_statistics(full, forget, device=device)
        for name in full:
            assert moved[name].device.type == device
            assert torch.equal(moved[name].cpu(), retain[name])


def test_retain_statistics_key_and_shape_mismatch():
    a = random_psd(3, 3)
    with pytest.raises(ValueError, match="'b'"):
        retain_statistics({"a": a, "b": a}, {"a": a})
    with pytest.raises(ValueError, match="'c'"):
        retain_statistics({"a": a}, {"a": a, "c": a})
    with pytest.raises(ValueError, match="shape"):
        retain_statistics({"a": a}, {"a": random_psd(4, 4)})


def test_float32_eigh_spans_the_same_cgs_as_float64():
    # distinct, well-separated eigenvalues: float32 must find the same k and the same space
    g = torch.Generator().manual_seed(5)
    q, _ = torch.linalg.qr(torch.randn(40, 40, generator=g, dtype=torch.float64))
    lam = torch.logspace(3, -1, 40, dtype=torch.float64)
    r = {"layer": q @ torch.diag(lam) @ q.T}
    b64, s64 = compute_bases(r, 0.9, lean=False)
    b32, s32 = compute_bases(r, 0.9, lean=False, eigh_dtype="float32")
    assert s64[0]["k"] == s32[0]["k"] and 0 < s64[0]["k"] < 40
    m64, m32 = b64["layer"].double(), b32["layer"].double()  # (40, k)
    # equal projectors <=> the same subspace
    torch.testing.assert_close(m32 @ m32.T, m64 @ m64.T, atol=1e-4, rtol=0)


def test_unknown_eigh_dtype_is_rejected():
    with pytest.raises(ValueError, match="eigh_dtype"):
        spectrum(random_psd(4, 4), eigh_dtype="float16")


@pytest.mark.parametrize(
    ("where", "message"),
    [("full", "stored statistics"), ("forget", "forget set's statistics")],
)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_retain_statistics_refuse_non_finite_entries_and_name_the_source(where, message, bad):
    full, forget = {"fc": random_psd(6, 6)}, {"fc": random_psd(6, 2, seed=1)}
    {"full": full, "forget": forget}[where]["fc"][2, 3] = bad
    with pytest.raises(ValueError, match=rf"layer 'fc': the {message}.*NaN or infinite"):
        retain_statistics(full, forget)


def test_compute_bases_refuses_a_non_finite_matrix():
    # without the check a NaN spectrum gives k = 0: the layer would silently go unprotected
    r = random_psd(8, 8)
    r[0, 0] = float("nan")
    with pytest.raises(ValueError, match="layer 'conv': the representation matrix has NaN"):
        compute_bases({"ok": random_psd(4, 4), "conv": r}, 0.95)


@pytest.mark.parametrize("lean", [False, True])
def test_a_layer_with_one_input_feature_gets_its_basis(lean):
    """d = 1 (a one-feature tabular input, a Linear(1, .)): LAPACK's tridiagonal path needs an
    off-diagonal, so the full eigh serves it. By the <= gamma rule its one direction (all the
    energy) is kept only at gamma = 1, which freezes the layer."""
    r = torch.tensor([[2.5]], dtype=torch.float64)
    lam, cols = spectrum_columns(r, lambda lam: (0, 1))
    assert lam.tolist() == [2.5] and cols.abs().tolist() == [[1.0]]
    retain = {"one": r, "dead": torch.zeros(1, 1, dtype=torch.float64), "b": random_psd(5, 5)}
    for gamma, k_one in ((0.95, 0), (1.0, 1)):
        bases, summary = compute_bases(retain, gamma=gamma, lean=lean)
        k = {s["layer"]: s["k"] for s in summary}
        assert k["one"] == k_one and k["dead"] == (0 if gamma < 1 else 1)
        assert {s["layer"]: s["frozen"] for s in summary}["one"] is (gamma == 1.0)
        stored = {name.removesuffix(".complement"): m for name, m in bases.items()}
        assert stored["one"].shape[0] == 1 and stored["one"].abs().sum() <= 1.0


def test_retain_statistics_refuse_a_garbled_stored_matrix():
    """Every stored R is exactly symmetric (symmetrised when written): a file garbled in place,
    which safetensors still reads, is refused rather than symmetrised into other bases."""
    from pgu.core.checkpoint import tensors_from_bytes, tensors_to_bytes

    full = {"fc": random_psd(32, 40, seed=2)}
    full["fc"] = (full["fc"] + full["fc"].T) / 2  # as stored
    forget = {"fc": random_psd(32, 3, seed=3)}
    data = bytearray(tensors_to_bytes(full, {}))
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0x5A for b in data[mid : mid + 64])
    garbled, _ = tensors_from_bytes(bytes(data))
    retain_statistics(full, forget)  # the intact file
    with pytest.raises(ValueError, match="layer 'fc': the stored statistics .* not symmetric"):
        retain_statistics(garbled, forget)
