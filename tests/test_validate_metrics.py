"""pzpipe.stages.metrics against the field's own classes (qp, RAIL) and hand-computed cases.

"equal" below is exact float equality (==) with the library's value on the same inputs,
unless a tolerance is named.
"""
import numpy as np
import pytest
from qp.metrics.pit import PIT
from qp.metrics.point_estimate_metric_classes import (PointBias, PointOutlierRate,
                                                      PointSigmaIQR, PointSigmaMAD)
from rail.evaluation.metrics.cdeloss import CDELoss

from pzpipe.stages import metrics

ZGRID = np.linspace(0.0, 3.0, 301)


def _sample(n=3000, seed=1, outliers=0.08):
    """Gaussian PDFs around noisy photo-z, some catastrophic outliers."""
    rng = np.random.default_rng(seed)
    zt = rng.uniform(0.05, 2.5, n)
    width = 0.03 * (1 + zt) * rng.uniform(0.6, 1.6, n)
    zp = zt + rng.normal(0, 0.03, n) * (1 + zt)
    bad = rng.random(n) < outliers
    zp[bad] = rng.uniform(0.05, 2.9, bad.sum())
    pdf = np.exp(-0.5 * ((ZGRID[None, :] - zp[:, None]) / width[:, None]) ** 2)
    pdf /= np.trapezoid(pdf, ZGRID, axis=1)[:, None]
    return zp, zt, pdf


def test_point_metrics_equal_qp_classes():
    zp, zt, _ = _sample()
    m = metrics.point_metrics(zp, zt)
    assert m["n"] == len(zp)
    assert m["bias"] == PointBias().evaluate(zp, zt)
    assert m["sigma_iqr"] == PointSigmaIQR().evaluate(zp, zt)
    assert m["sigma_nmad"] == PointSigmaMAD().evaluate(zp, zt)
    assert m["outlier_rate_3sigma"] == PointOutlierRate().evaluate(zp, zt)
    ez = (zp - zt) / (1 + zt)
    assert m["outlier_frac_015"] == np.mean(np.abs(ez) > 0.15)
    # the two outlier definitions differ on this sample (0.06 floor vs 0.15)
    assert m["outlier_rate_3sigma"] > m["outlier_frac_015"]


def test_point_metrics_hand_computed():
    # z_true = 0 -> ez = z_phot; sorted ez: -0.02, 0.01, 0.03, 0.5
    zp = np.array([0.01, 0.03, -0.02, 0.5])
    zt = np.zeros(4)
    m = metrics.point_metrics(zp, zt)
    assert m["bias"] == pytest.approx(0.02, abs=1e-15)
    # numpy linear percentiles: q25 = -0.02 + 0.75*0.03 = 0.0025, q75 = 0.03 + 0.25*0.47
    assert m["sigma_iqr"] == pytest.approx((0.1475 - 0.0025) / 1.349, abs=1e-15)
    assert m["sigma_nmad"] == pytest.approx(1.4826 * 0.025, abs=1e-15)
    # limit max(0.06, 3*0.1075) = 0.3225: only 0.5 is an outlier; 0.5 > 0.15 too
    assert m["outlier_rate_3sigma"] == 0.25 and m["outlier_frac_015"] == 0.25


def test_outlier_rate_uses_006_floor():
    # tight core (sigma_IQR ~ 0.0074 -> 3 sigma < 0.06): |ez| = 0.08 counts for qp, not for 0.15
    zt = np.zeros(100)
    zp = np.concatenate([np.linspace(-0.01, 0.01, 90), np.full(10, 0.08)])
    m = metrics.point_metrics(zp, zt)
    assert m["outlier_rate_3sigma"] == PointOutlierRate().evaluate(zp, zt) == 0.10
    assert m["outlier_frac_015"] == 0.0


def test_empty_point_metrics_are_nan():
    m = metrics.point_metrics(np.array([]), np.array([]))
    assert m["n"] == 0 and all(np.isnan(m[k]) for k in metrics.POINT_KEYS)


def test_pit_meta_metrics_equal_qp():
    zp, zt, pdf = _sample(1500)
    ens = metrics.ensemble(pdf, ZGRID)
    ours = metrics.pit_metrics(metrics.pit(ens, zt))
    ref = PIT(ens, zt).calculate_pit_meta_metrics()
    assert ours["pit_ks"] == ref["ks"].statistic
    assert ours["pit_cvm"] == ref["cvm"].statistic
    assert ours["pit_ad"] == ref["ad"].statistic
    assert ours["pit_outlier_rate"] == ref["outlier_rate"]
    assert set(ours) == set(metrics.PIT_KEYS)


def test_binned_pit_ks_equals_qp_on_the_bin():
    """PIT KS of a subset from the whole sample's PIT values == qp's PIT on that subset."""
    zp, zt, pdf = _sample(1200, seed=3)
    ens = metrics.ensemble(pdf, ZGRID)
    pits = np.asarray(metrics.pit(ens, zt).pit_samps)
    sel = (zt > 0.8) & (zt < 1.4)
    sub = PIT(metrics.ensemble(pdf[sel], ZGRID), zt[sel])
    assert np.array_equal(pits[sel], sub.pit_samps)
    assert metrics.pit_ks(pits[sel]) == sub.evaluate_PIT_KS().statistic


def test_cde_loss_equals_rail():
    zp, zt, pdf = _sample(800, seed=5)
    ens = metrics.ensemble(pdf, ZGRID)
    ours = metrics.cde_loss(ens, ZGRID, zt)
    assert ours == CDELoss(ens, ZGRID, zt).evaluate().statistic
    # RAIL takes p at the nearest grid point (not interpolated): same by hand, to 1e-12
    p = ens.pdf(ZGRID)
    nn = np.abs(ZGRID[None, :] - zt[:, None]).argmin(axis=1)
    hand = np.mean(np.trapezoid(p ** 2, ZGRID, axis=1)) - 2 * np.mean(p[np.arange(len(zt)), nn])
    assert ours == pytest.approx(hand, abs=1e-12)


def test_assign_bins_hand_computed():
    edges = [0.0, 1.0, 2.0, 3.0]
    v = np.array([-0.1, 0.0, 0.5, 1.0, 1.999, 2.0, 3.0, 3.01, np.nan])
    assert metrics.assign_bins(v, edges).tolist() == [-1, 0, 0, 1, 1, 2, 2, -1, -1]


def test_binned_metrics_hand_computed():
    # bin [0, 1): ez = z_phot (z_true 0): the hand case above; bin [1, 2): 2 objects;
    # bin [2, 3): empty. Binned on a third variable 'values'.
    zp = np.array([0.01, 0.03, -0.02, 0.5, 0.2, 0.4])
    zt = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    values = np.array([0.1, 0.2, 0.3, 0.99, 1.5, 1.0])
    pits = np.array([0.1, 0.4, 0.6, 0.9, 0.5, 0.5])
    rows = metrics.binned_metrics(zp, zt, pits, values, [0.0, 1.0, 2.0, 3.0], min_objects=3)
    assert [(r["lo"], r["hi"], r["n"]) for r in rows] == [(0, 1, 4), (1, 2, 2), (2, 3, 0)]
    r0 = rows[0]
    assert r0["bias"] == pytest.approx(0.02, abs=1e-15)
    assert r0["sigma_iqr"] == pytest.approx(0.145 / 1.349, abs=1e-15)
    assert r0["sigma_nmad"] == pytest.approx(1.4826 * 0.025, abs=1e-15)
    assert r0["outlier_rate_3sigma"] == 0.25 and r0["outlier_frac_015"] == 0.25
    # KS of {0.1, 0.4, 0.6, 0.9} against U(0,1): max over i of |i/4 - x_i|, |x_i - (i-1)/4|
    assert r0["pit_ks"] == pytest.approx(0.15, abs=1e-12)
    for r in rows[1:]:      # below min_objects: n kept, metrics NaN
        assert all(np.isnan(r[k]) for k in (*metrics.POINT_KEYS, "pit_ks"))


def test_tomo_nz_hand_computed():
    # PDFs with one non-zero node: triangles centred on the node, mean = the node
    z = ZGRID
    pdf = np.zeros((3, len(z)))
    pdf[0, 40] = 1.0      # z = 0.4
    pdf[1, 50] = 3.0      # z = 0.5 (the amplitude is normalised away)
    pdf[2, 200] = 1.0     # z = 2.0
    zp = np.array([0.35, 0.55, 2.0])
    zt = np.array([0.45, 0.55, 1.9])
    rows, curves = metrics.tomo_nz(zp, zt, pdf, z, [0.3, 0.6, 1.5, 3.0])
    assert [r["n"] for r in rows] == [2, 0, 1]
    r = rows[0]
    assert r["mean_z_true"] == pytest.approx(0.5, abs=1e-12)
    assert r["mean_z_stacked"] == pytest.approx(0.45, abs=1e-12)
    assert r["mean_shift"] == pytest.approx(-0.05, abs=1e-12)
    assert r["mean_shift_1pz"] == pytest.approx(-0.05 / 1.5, abs=1e-12)
    assert np.trapezoid(curves[0], z) == pytest.approx(1.0, abs=1e-12)
    assert np.isnan(rows[1]["mean_shift"]) and not curves[1].any()
    assert rows[2]["mean_shift"] == pytest.approx(0.1, abs=1e-12)
