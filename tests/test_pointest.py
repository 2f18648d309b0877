import numpy as np
import pytest

from pzpipe.release.pointest import point_estimates

Z = np.linspace(0, 3, 301)


def gauss(mu, s):
    return np.exp(-0.5 * ((Z - mu) / s) ** 2)


def test_gaussian_point_estimates():
    pdf = np.stack([gauss(1.0, 0.05), gauss(0.5, 0.1)])
    pe, bad = point_estimates(pdf, Z)
    assert not bad.any()
    np.testing.assert_allclose(pe["z_mode"], [1.0, 0.5])
    np.testing.assert_allclose(pe["z_mean"], [1.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(pe["z_median"], [1.0, 0.5], atol=1e-3)
    # absolute percentiles (Rubin DP1 convention): 16/84% at mu -+ sigma, 2.5/97.5% at
    # mu -+ 1.96 sigma (linear interpolation of the trapezoid CDF on a 0.01 grid)
    np.testing.assert_allclose(pe["z_err68_low"], [0.95, 0.4], atol=2e-3)
    np.testing.assert_allclose(pe["z_err68_high"], [1.05, 0.6], atol=2e-3)
    np.testing.assert_allclose(pe["z_err95_low"], [1 - 1.96 * 0.05, 0.5 - 1.96 * 0.1], atol=2e-3)
    np.testing.assert_allclose(pe["z_err95_high"], [1 + 1.96 * 0.05, 0.5 + 1.96 * 0.1], atol=2e-3)
    for k in ("z_err95_low", "z_err68_low", "z_median", "z_err68_high", "z_err95_high"):
        assert pe[k].shape == (2,)
    assert (pe["z_err95_low"] < pe["z_err68_low"]).all() and (pe["z_err68_high"] < pe["z_err95_high"]).all()


def test_bimodal_mode_and_median():
    pdf = (gauss(0.5, 0.05) + 2 * gauss(2.0, 0.05))[None]
    pe, _ = point_estimates(pdf, Z)
    assert pe["z_mode"][0] == pytest.approx(2.0)
    assert 0.55 < pe["z_median"][0] < 2.0


def test_zero_and_nan_pdfs_are_flagged():
    pdf = np.stack([np.zeros(301), np.full(301, np.nan), gauss(1, 0.1)])
    pe, bad = point_estimates(pdf, Z)
    assert bad.tolist() == [True, True, False]
    assert np.isnan(pe["z_mode"][:2]).all() and np.isfinite(pe["z_mode"][2])


def test_empty_input():
    pe, bad = point_estimates(np.zeros((0, 301)), Z)
    assert len(bad) == 0 and all(len(v) == 0 for v in pe.values())


def test_numba_kernel_equals_numpy_reference():
    from pzpipe.release.pointest import point_estimates_numpy

    rng = np.random.default_rng(3)
    mu = rng.uniform(0.05, 2.9, 500)
    s = rng.uniform(0.003, 0.5, 500)
    pdf = np.exp(-0.5 * ((Z[None] - mu[:, None]) / s[:, None]) ** 2)
    pdf += rng.uniform(0, 0.05, pdf.shape) * (rng.uniform(size=(500, 1)) < 0.3)
    pdf[0] = 0
    pdf[1, 10] = np.inf
    pdf[2, :] = -1
    a, ba = point_estimates(pdf, Z)
    b, bb = point_estimates_numpy(pdf, Z)
    np.testing.assert_array_equal(ba, bb)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-9, atol=1e-12, equal_nan=True)


def _previous_kernel():
    """The two-pass kernel pzpipe used before the single-pass one (kept verbatim as the
    reference the current kernel must equal bit for bit)."""
    from numba import njit

    from pzpipe.release.pointest import Q16, Q84, Q025, Q975

    @njit(cache=False)
    def kern(pdf, z, out, bad):
        n, m = pdf.shape
        qs = (Q025, Q16, 0.5, Q84, Q975)
        col = (5, 3, 2, 4, 6)
        nq = 5
        for i in range(n):
            norm = 0.0
            best = -1.0
            ib = 0
            for j in range(m):
                v = pdf[i, j]
                if not (v > 0.0 and v < np.inf):
                    v = 0.0
                if v > best:
                    best = v
                    ib = j
                if j > 0:
                    pv = pdf[i, j - 1]
                    if not (pv > 0.0 and pv < np.inf):
                        pv = 0.0
                    norm += 0.5 * (v + pv) * (z[j] - z[j - 1])
            if not norm > 0.0:
                bad[i] = True
                for k in range(7):
                    out[i, k] = np.nan
                continue
            out[i, 0] = z[ib]
            mean = 0.0
            c = 0.0
            k = 0
            for j in range(1, m):
                v = pdf[i, j]
                if not (v > 0.0 and v < np.inf):
                    v = 0.0
                pv = pdf[i, j - 1]
                if not (pv > 0.0 and pv < np.inf):
                    pv = 0.0
                dz = z[j] - z[j - 1]
                mean += 0.5 * (v * z[j] + pv * z[j - 1]) * dz
                inc = 0.5 * (v + pv) * dz / norm
                while k < nq and c + inc >= qs[k]:
                    t = (qs[k] - c) / inc if inc > 0 else 0.0
                    t = min(max(t, 0.0), 1.0)
                    out[i, col[k]] = z[j - 1] + t * dz
                    k += 1
                c += inc
            while k < nq:
                out[i, col[k]] = z[m - 1]
                k += 1
            out[i, 1] = mean / norm

    return kern


def hostile_pdfs(z, n=4000, seed=11):
    """Grid PDFs of every shape the estimators produce, and broken ones: narrow and wide
    Gaussians (some on the grid edges), multi-modal, noisy, spikes on one node, zero,
    negative, NaN/inf entries, subnormal and huge values, unnormalised rows."""
    rng = np.random.default_rng(seed)
    m = len(z)
    mu = rng.uniform(-0.2, z[-1] + 0.2, (n, 1))
    s = 10 ** rng.uniform(-3.5, 0, (n, 1))
    p = np.exp(-0.5 * ((z[None] - mu) / s) ** 2) * 10 ** rng.uniform(-5, 5, (n, 1))
    k = n // 8
    p[:k] += np.exp(-0.5 * ((z[None] - rng.uniform(0, z[-1], (k, 1))) / 0.05) ** 2)
    p[k:2 * k] = rng.random((k, m)) ** 8
    p[2 * k:2 * k + 50] = 0.0
    p[2 * k:2 * k + 50, rng.integers(0, m, 50)] = 1.0
    p[2 * k + 50:2 * k + 100] *= rng.choice([-1.0, 1.0], (50, m))
    p[2 * k + 100:2 * k + 110] = 0.0
    p[2 * k + 110:2 * k + 120] = -1.0
    p[2 * k + 120, 7] = np.nan
    p[2 * k + 121, 9] = np.inf
    p[2 * k + 122, :] = np.inf
    p[2 * k + 123:2 * k + 133] *= 1e-318
    p[2 * k + 133:2 * k + 143] = rng.random((10, m)) * 1e307
    p[2 * k + 143:2 * k + 153, -1] = 1e3
    p[2 * k + 153:2 * k + 163, 0] = 1e3
    return p


def test_kernel_equals_previous_kernel_bit_for_bit():
    """The single-pass kernel gives the same bits as the two-pass one it replaced, on
    the default grid and on an irregular one."""
    from pzpipe.release.pointest import KEYS

    prev = _previous_kernel()
    zi = np.sort(np.concatenate([[0.0, 3.0], np.random.default_rng(2).uniform(0, 3, 148)]))
    for z in (Z, zi):
        pdf = hostile_pdfs(z)
        pe, bad = point_estimates(pdf, z)
        out = np.empty((len(pdf), 7))
        ref_bad = np.zeros(len(pdf), dtype=bool)
        prev(pdf, z, out, ref_bad)
        np.testing.assert_array_equal(bad, ref_bad)
        for i, k in enumerate(KEYS):
            np.testing.assert_array_equal(pe[k].view(np.int64), out[:, i].view(np.int64), err_msg=k)
