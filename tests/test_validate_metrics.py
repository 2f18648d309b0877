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


def _obj(zp, zt, pits, in68=None, in95=None):
    n = len(zp)
    return {"zp": np.asarray(zp, float), "zt": np.asarray(zt, float),
            "pit": np.asarray(pits, float),
            "in68": np.ones(n, bool) if in68 is None else np.asarray(in68),
            "in95": np.ones(n, bool) if in95 is None else np.asarray(in95)}


def test_binned_metrics_hand_computed():
    # bin [0, 1): ez = z_phot (z_true 0): the hand case above; bin [1, 2): 2 objects;
    # bin [2, 3): empty. Binned on a third variable 'values'.
    zp = np.array([0.01, 0.03, -0.02, 0.5, 0.2, 0.4])
    zt = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    values = np.array([0.1, 0.2, 0.3, 0.99, 1.5, 1.0])
    pits = np.array([0.1, 0.4, 0.6, 0.9, 0.5, 0.5])
    in68 = np.array([True, True, False, False, True, True])
    obj = _obj(zp, zt, pits, in68=in68)
    counts = metrics.bootstrap_counts(len(zp), 50, 7)
    rows = metrics.binned_metrics(obj, counts, values, [0.0, 1.0, 2.0, 3.0], min_objects=3,
                                  small_n=5)
    assert [(r["lo"], r["hi"], r["n"]) for r in rows] == [(0, 1, 4), (1, 2, 2), (2, 3, 0)]
    assert [r["small"] for r in rows] == [True, True, True]
    r0 = rows[0]
    assert r0["bias"] == pytest.approx(0.02, abs=1e-15)
    assert r0["sigma_iqr"] == pytest.approx(0.145 / 1.349, abs=1e-15)
    assert r0["sigma_nmad"] == pytest.approx(1.4826 * 0.025, abs=1e-15)
    assert r0["outlier_rate_3sigma"] == 0.25 and r0["outlier_frac_015"] == 0.25
    assert r0["coverage_68"] == 0.5 and r0["coverage_95"] == 1.0
    assert r0["coverage_95_err"] == 0.0 and r0["coverage_68_err"] > 0
    # KS of {0.1, 0.4, 0.6, 0.9} against U(0,1): max over i of |i/4 - x_i|, |x_i - (i-1)/4|
    assert r0["pit_ks"] == pytest.approx(0.15, abs=1e-12)
    assert r0["pit_outlier_rate"] == 0.0
    for r in rows[1:]:      # below min_objects: n kept, metrics NaN
        assert all(np.isnan(r[k]) for k in metrics.SAMPLE_KEYS)
    rows = metrics.binned_metrics(obj, counts, values, [0.0, 1.0, 2.0, 3.0], 3, small_n=4)
    assert [r["small"] for r in rows] == [False, True, True]


# ----------------------------------------------------------------------------- bootstrap
def _expanded(counts_row, *arrays):
    idx = np.repeat(np.arange(len(counts_row)), counts_row)
    return [a[idx] for a in arrays]


def test_bootstrap_counts_are_seeded_resamples():
    c = metrics.bootstrap_counts(1000, 40, 3)
    assert c.shape == (40, 1000) and c.dtype == np.uint16
    assert (c.sum(axis=1) == 1000).all()                       # n draws per resample
    assert np.array_equal(c, metrics.bootstrap_counts(1000, 40, 3))
    assert not np.array_equal(c, metrics.bootstrap_counts(1000, 40, 4))
    # with replacement: about 1 - 1/e of the objects drawn at least once
    assert abs((c > 0).mean() - (1 - np.exp(-1))) < 0.01


def test_count_weighted_statistics_equal_the_library_on_each_resample():
    """On every resample, the vectorised statistics equal qp's classes and scipy's tests
    run on the resampled arrays themselves (exact equality for the point metrics and KS;
    CvM to 1e-12: it sums in another order)."""
    from scipy import stats

    zp, zt, pdf = _sample(1502, seed=11)        # (n - 1)/4 not whole: interpolated quantiles, even median
    ez = (zp - zt) / (1 + zt)
    pits = metrics.pit_values(pdf, ZGRID, zt)
    counts = np.vstack([np.ones((1, len(zp)), np.uint16), metrics.bootstrap_counts(len(zp), 6, 2)])
    pm = metrics.point_metrics_counts(ez, counts)
    ks = metrics.ks_uniform_counts(pits, counts)
    cvm = metrics.cvm_uniform_counts(pits, counts)
    for b in range(len(counts)):
        zpb, ztb, pb = _expanded(counts[b], zp, zt, pits)
        ref = metrics.point_metrics(zpb, ztb)
        for k in metrics.POINT_KEYS:
            assert pm[k][b] == ref[k], (b, k)
        assert ks[b] == stats.kstest(pb, stats.uniform.cdf).statistic
        assert cvm[b] == pytest.approx(stats.cramervonmises(pb, stats.uniform.cdf).statistic,
                                       rel=1e-12)
        assert metrics.wmean(pits > 0.5, counts[b:b + 1])[0] == np.mean(pb > 0.5)


def test_sample_metrics_errors_are_the_std_over_resamples():
    zp, zt, pdf = _sample(900, seed=12)
    pits = metrics.pit_values(pdf, ZGRID, zt)
    obj = _obj(zp, zt, pits, in68=np.abs(zp - zt) < 0.05, in95=np.abs(zp - zt) < 0.1)
    counts = metrics.bootstrap_counts(len(zp), 30, 5)
    sel = zt > 0.5
    m = metrics.sample_metrics(obj, counts, sel)
    assert m["n"] == sel.sum() and m["sigma_iqr"] == PointSigmaIQR().evaluate(zp[sel], zt[sel])
    reps = {k: [] for k in ("sigma_iqr", "outlier_rate_3sigma", "coverage_68", "pit_ks")}
    for b in range(len(counts)):
        c = np.where(sel, counts[b], 0)
        zpb, ztb, pb, i68 = _expanded(c, zp, zt, pits, obj["in68"])
        reps["sigma_iqr"].append(PointSigmaIQR().evaluate(zpb, ztb))
        reps["outlier_rate_3sigma"].append(PointOutlierRate().evaluate(zpb, ztb))
        reps["coverage_68"].append(i68.mean())
        reps["pit_ks"].append(metrics.pit_ks(pb))
    for k, v in reps.items():
        assert m[f"{k}_err"] == pytest.approx(np.std(v, ddof=1), rel=1e-9), k


def test_bootstrap_error_of_a_fraction_is_binomial():
    """Sanity of the size: the error of a fraction p over n objects is close to
    sqrt(p (1 - p) / n) (seeded, so the 10% tolerance is not a flaky bound)."""
    rng = np.random.default_rng(0)
    flag = rng.random(4000) < 0.1
    e = metrics.std_err(metrics.wmean(flag, metrics.bootstrap_counts(4000, 400, 9)))
    expect = np.sqrt(flag.mean() * (1 - flag.mean()) / 4000)
    assert abs(e / expect - 1) < 0.1


def test_pit_values_exact_and_close_to_qp():
    # triangle PDF on [0.4, 0.6] peaking at 0.5: CDF(0.45) = 0.125, CDF(0.5) = 0.5 exactly
    pdf = np.zeros((3, len(ZGRID)))
    pdf[:, 40], pdf[:, 50], pdf[:, 60] = 0.0, 1.0, 0.0
    pdf[:, 41:50] = np.linspace(0.1, 0.9, 9)
    pdf[:, 51:60] = np.linspace(0.9, 0.1, 9)
    p = metrics.pit_values(pdf, ZGRID, np.array([0.45, 0.5, 0.7]))
    assert p[0] == pytest.approx(0.125, abs=1e-12) and p[1] == pytest.approx(0.5, abs=1e-12)
    assert p[2] == 1.0
    assert metrics.pit_values(pdf[:1], ZGRID, np.array([3.5]))[0] == 1.0
    # qp's PIT interpolates its trapezoid cumulative sum linearly between grid nodes: it
    # differs from the exact CDF by (p1 - p0) x (x - d) / (2d) inside an interval of width
    # d, at most |p1 - p0| d / 8 (over the PDF's area); here up to ~6e-3 for narrow PDFs
    zp, zt, pdfs = _sample(2000, seed=13)
    ours = metrics.pit_values(pdfs, ZGRID, zt)
    qp_pits = np.asarray(metrics.pit(metrics.ensemble(pdfs, ZGRID), zt).pit_samps)
    i = np.searchsorted(ZGRID, zt, side="right") - 1
    d = ZGRID[1] - ZGRID[0]
    rows = np.arange(len(zt))
    bound = np.abs(pdfs[rows, i + 1] - pdfs[rows, i]) * d / 8 / np.trapezoid(pdfs, ZGRID, axis=1)
    assert (np.abs(ours - qp_pits) <= bound + 1e-12).all()
    assert np.abs(ours - qp_pits).max() > 1e-3                  # not a tolerance of nothing


def test_cde_terms_and_pdf_means_equal_the_library():
    zp, zt, pdf = _sample(700, seed=14)
    ens = metrics.ensemble(pdf, ZGRID)
    assert np.mean(metrics.cde_terms(pdf, ZGRID, zt)) == pytest.approx(
        CDELoss(ens, ZGRID, zt).evaluate().statistic, abs=1e-12)
    rows, _ = metrics.tomo_nz(zp, zt, pdf, ZGRID, [0.0, 1.0, 3.0])
    mu = metrics.pdf_means(pdf, ZGRID)
    sel = metrics.assign_bins(zp, [0.0, 1.0, 3.0]) == 0
    assert mu[sel].mean() == pytest.approx(rows[0]["mean_z_stacked"], abs=1e-12)


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
