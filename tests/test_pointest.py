import numpy as np
import pytest

from pzpipe.pointest import point_estimates

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
    from pzpipe.pointest import point_estimates_numpy

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
