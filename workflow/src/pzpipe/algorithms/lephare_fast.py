"""LePhare's galaxy photo-z PDF (``BAY_ZG``) with RAIL's LephareEstimator numbers, compiled.

RAIL's ``LephareEstimator`` calls ``lephare.process`` per chunk: LePhare's C++ then, per
object, fits every model of the library (``onesource::fit``: the analytic flux scaling and
chi-square), retries the fit without its worst bands when the best chi-square exceeds
``RM_DISCREPANT_BD`` (``rm_discrepant``), and builds the marginal posteriors
(``generatePDF``); then it derives a dozen more products per object (best-fit physical
parameters, absolute magnitudes, emission-line fluxes, mass/SFR/age PDFs ...) that RAIL
drops: it keeps only the ``BAY_ZG`` PDF (``posterior_output`` 11). LePhare runs ~10
objects/s/core that way.

``FastLephare`` computes only what RAIL keeps, with LePhare's own arithmetic in LePhare's
own order (numba, no fastmath): the flux conversions of ``PhotoZ::prep_data``
(``convertFlux``, ``rescale_flux_errors`` with ``ERR_SCALE``/``ERR_FACTOR``, ``fltUsed``
with ``GLB_CONTEXT``/``FORB_CONTEXT``, ``adapt_mag`` with the model's offsets), the fit
with the absolute-magnitude prior (``MAG_ABS``, ``MAG_REF``) and upper limits, the
``rm_discrepant`` loop (including its quirk: when no band removal improves the fit, the
chi-squares left are those of the last trial removal), ``BAY_ZG`` = sum over models at
each redshift of exp(-(chi2 - chi2_min)/2) (terms whose exponential underflows to 0 are
skipped: same sum), normalised by LePhare's trapezoid, then RAIL's qp ensemble. The
library (model fluxes, redshifts, z=0 magnitudes) is read by LePhare's own ``PhotoZ``.

Scope: galaxy libraries (``ZPHOTLIB`` without star/QSO libraries: their models only change
``rm_discrepant``'s threshold test), ``ZFIX NO``, no ``NZ_PRIOR``, magnitudes in
(``INP_TYPE M``, ``CAT_MAG AB``); anything else raises (run with ``fast: false``).
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit

from ._numba import CACHE

HIGH_CHI2 = 1.0e9
INVALID_FLUX = -9999.0
LN10 = 2.302585092994046         # LePhare's POW10D: exp(2.302585092994046 * x)
EXP_UNDERFLOW = -746.0           # exp(x) == 0.0 below this (double)
# lephare 1.0.0's wheel divides by the constant 1.086 as a multiplication by its
# reciprocal (measured against its prep_data on 1,800 random fluxes: every bit equal)
INV1086 = 1.0 / 1.086


@njit(cache=CACHE, nogil=True, error_model="numpy")
def _prep(mag, err, nb, gbcont, contforb, context, min_err, fac_err, a0, ab, sab, busnorma,
          busul, ab_ori):
    """PhotoZ::prep_data + adapt_mag for one object; returns nbul."""
    for k in range(nb):
        ab[k] = mag[k]
        sab[k] = err[k]
        if np.isnan(ab[k]) or np.isnan(sab[k]):      # lephare.process: NaN -> -99
            ab[k] = -99.0
            sab[k] = -99.0
    # convertFlux (AB)
    for k in range(nb):
        if ab[k] < 0 and sab[k] < 0:
            ab[k] = INVALID_FLUX
            sab[k] = INVALID_FLUX
    for k in range(nb):
        if ab[k] != INVALID_FLUX:
            ab[k] = np.exp(LN10 * (-0.4 * (ab[k] + 48.6 - 0.0)))
    for k in range(nb):
        if ab[k] != INVALID_FLUX:
            sab[k] = ab[k] * sab[k] * INV1086
    # rescale_flux_errors
    nmin = min_err.shape[0]
    for k in range(nb):
        if sab[k] >= 0 and ab[k] != 0.0:
            sab[k] = 1.086 * sab[k] / ab[k]
            me = min_err[k] if nmin > 1 else min_err[0]
            sab[k] = np.sqrt(sab[k] * sab[k] + me * me)
            sab[k] = abs(ab[k]) * sab[k] * INV1086
    nfac = fac_err.shape[0]
    for k in range(nb):
        fe = fac_err[k] if nfac > 1 else fac_err[0]
        if sab[k] > 0:
            sab[k] = sab[k] * fe
    # keepOri
    for k in range(nb):
        ab_ori[k] = ab[k]
    # fltUsed
    cont = context
    if gbcont >= 0:
        cont = gbcont
    nbul = 0
    for k in range(nb):
        if cont <= 0:
            bused = 1
        else:
            bused = (cont >> k) & 1
        if contforb > 0 and ((contforb >> k) & 1) == 1:
            bused = 0
        if sab[k] < 0 and ab[k] < 0:
            bused = 0
        if sab[k] == 0:
            bused = 0
            ab[k] = -99.9
            sab[k] = -99.9
        busnorma[k] = bused
        if sab[k] < 0:
            busnorma[k] = 0
        busul[k] = 0
        if bused == 1 and sab[k] < 0:
            busul[k] = 1
        if busul[k] == 1:
            nbul += 1
    # adapt_mag (offsets a0)
    for k in range(nb):
        if ab_ori[k] > 0 or sab[k] > 0:
            ab[k] = ab_ori[k] * 10.0 ** (0.4 * a0[k])
    return nbul


@njit(cache=CACHE, nogil=True, error_model="numpy")
def _fit(fluxT, mag0, red, dm_in_lo, dm_in_hi, dm_out_lo, dm_out_hi, plo, phi, ab, sab,
         busnorma, busul, nbul, prior_lo, prior_hi, use_prior, funz0, chi2, avo, avt, sure):
    """onesource::fit over every (galaxy) model: fills chi2, returns the minimum.

    Same operations in the same order per model as LePhare's loop (bands in order), with
    the loops turned inside out (bands outer, models inner: the compiler vectorises over
    models). ``fluxT``: model fluxes (bands, models); ``sure``: a work array (bool, one per
    model) for ``_flags``."""
    nb = ab.shape[0]
    nlib = chi2.shape[0]
    invsab = np.empty(nb)
    invsabsq = np.empty(nb)
    s2n = np.empty(nb)
    abinvsabsq = np.empty(nb)
    for i in range(nb):
        invsab[i] = busnorma[i] * 1.0 / sab[i]
    for i in range(nb):
        invsabsq[i] = invsab[i] * invsab[i]
        s2n[i] = ab[i] * invsab[i]
    for i in range(nb):
        abinvsabsq[i] = ab[i] * invsabsq[i]
    if nb == 6 and nbul == 0 and use_prior:       # the common case, in one pass
        namb = _fit6_prior(fluxT, abinvsabsq, invsabsq, s2n, invsab, plo, phi, chi2, sure)
        if namb:
            for i in range(nlib):
                if sure[i]:
                    continue
                dmloc = _scale6(fluxT, i, abinvsabsq, invsabsq)
                abs_mag = mag0[i] - 2.5 * np.log10(dmloc)
                if red[i] < 1.e-10:
                    abs_mag = abs_mag - funz0
                if abs_mag <= prior_lo or abs_mag >= prior_hi:
                    chi2[i] = HIGH_CHI2
        chimin = HIGH_CHI2
        for i in range(nlib):
            c = chi2[i]
            if c < HIGH_CHI2:
                if chimin > c:
                    chimin = c
        return chimin
    if nb == 6:
        _fit6(fluxT, abinvsabsq, invsabsq, s2n, invsab, chi2, avo)
    else:
        _fit_any(fluxT, abinvsabsq, invsabsq, s2n, invsab, chi2, avo, avt)
    return _flags(fluxT, mag0, red, dm_in_lo, dm_in_hi, dm_out_lo, dm_out_hi, ab, busnorma,
                  busul, nbul, prior_lo, prior_hi, use_prior, funz0, chi2, avo, sure)


@njit(cache=CACHE, nogil=True, error_model="numpy")
def _fit6(fluxT, a, b, s2n, invsab, chi2, dm):
    """Scaling and chi-square of every model, 6 bands, one pass (LePhare's operations in
    LePhare's order per model); the scaling goes to ``dm``."""
    f0, f1, f2, f3, f4, f5 = fluxT[0], fluxT[1], fluxT[2], fluxT[3], fluxT[4], fluxT[5]
    a0, a1, a2, a3, a4, a5 = a[0], a[1], a[2], a[3], a[4], a[5]
    b0, b1, b2, b3, b4, b5 = b[0], b[1], b[2], b[3], b[4], b[5]
    s0, s1, s2, s3, s4, s5 = s2n[0], s2n[1], s2n[2], s2n[3], s2n[4], s2n[5]
    i0, i1, i2, i3, i4, i5 = (invsab[0], invsab[1], invsab[2], invsab[3], invsab[4],
                              invsab[5])
    for i in range(fluxT.shape[1]):
        x0, x1, x2, x3, x4, x5 = f0[i], f1[i], f2[i], f3[i], f4[i], f5[i]
        avmago = 0.0 + x0 * a0
        avmago = avmago + x1 * a1
        avmago = avmago + x2 * a2
        avmago = avmago + x3 * a3
        avmago = avmago + x4 * a4
        avmago = avmago + x5 * a5
        avmagt = 0.0 + x0 * x0 * b0
        avmagt = avmagt + x1 * x1 * b1
        avmagt = avmagt + x2 * x2 * b2
        avmagt = avmagt + x3 * x3 * b3
        avmagt = avmagt + x4 * x4 * b4
        avmagt = avmagt + x5 * x5 * b5
        d = avmago / avmagt if avmagt > 0 else -999.0
        e0 = s0 - d * x0 * i0
        e1 = s1 - d * x1 * i1
        e2 = s2 - d * x2 * i2
        e3 = s3 - d * x3 * i3
        e4 = s4 - d * x4 * i4
        e5 = s5 - d * x5 * i5
        c = 0.0 + e0 * e0
        c = c + e1 * e1
        c = c + e2 * e2
        c = c + e3 * e3
        c = c + e4 * e4
        c = c + e5 * e5
        chi2[i] = c
        dm[i] = d


@njit(cache=CACHE, nogil=True, error_model="numpy")
def _fit6_prior(fluxT, a, b, s2n, invsab, plo, phi, chi2, sure):
    """``_fit6`` and the sure part of ``_flags``' prior in one pass (6 bands, no upper
    limit): the chi-square of every model, HIGH_CHI2 where its scaling is surely outside
    the prior's range; ``sure[i]`` False where LePhare's log10 test must decide (``plo``,
    ``phi``: the scaling bounds, NaN for the z = 0 models). Returns how many are not
    sure. The scalings are not stored: ``_scale6`` recomputes one (same operations)."""
    f0, f1, f2, f3, f4, f5 = fluxT[0], fluxT[1], fluxT[2], fluxT[3], fluxT[4], fluxT[5]
    a0, a1, a2, a3, a4, a5 = a[0], a[1], a[2], a[3], a[4], a[5]
    b0, b1, b2, b3, b4, b5 = b[0], b[1], b[2], b[3], b[4], b[5]
    s0, s1, s2, s3, s4, s5 = s2n[0], s2n[1], s2n[2], s2n[3], s2n[4], s2n[5]
    i0, i1, i2, i3, i4, i5 = (invsab[0], invsab[1], invsab[2], invsab[3], invsab[4],
                              invsab[5])
    nsure = 0
    for i in range(fluxT.shape[1]):
        x0, x1, x2, x3, x4, x5 = f0[i], f1[i], f2[i], f3[i], f4[i], f5[i]
        avmago = 0.0 + x0 * a0
        avmago = avmago + x1 * a1
        avmago = avmago + x2 * a2
        avmago = avmago + x3 * a3
        avmago = avmago + x4 * a4
        avmago = avmago + x5 * a5
        avmagt = 0.0 + x0 * x0 * b0
        avmagt = avmagt + x1 * x1 * b1
        avmagt = avmagt + x2 * x2 * b2
        avmagt = avmagt + x3 * x3 * b3
        avmagt = avmagt + x4 * x4 * b4
        avmagt = avmagt + x5 * x5 * b5
        d = avmago / avmagt if avmagt > 0 else -999.0
        e0 = s0 - d * x0 * i0
        e1 = s1 - d * x1 * i1
        e2 = s2 - d * x2 * i2
        e3 = s3 - d * x3 * i3
        e4 = s4 - d * x4 * i4
        e5 = s5 - d * x5 * i5
        c = 0.0 + e0 * e0
        c = c + e1 * e1
        c = c + e2 * e2
        c = c + e3 * e3
        c = c + e4 * e4
        c = c + e5 * e5
        lo, hi = plo[i], phi[i]
        inside = (lo * (1 + 1e-9) < d) & (d < hi * (1 - 1e-9))
        outside = (d > hi * (1 + 1e-9)) | ((d > 0) & (d < lo * (1 - 1e-9)))
        chi2[i] = HIGH_CHI2 if outside else c
        ok = inside | outside
        sure[i] = ok
        nsure += ok
    return fluxT.shape[1] - nsure


@njit(cache=CACHE, nogil=True, error_model="numpy")
def _scale6(fluxT, i, a, b):
    """The scaling of model ``i`` as ``_fit6`` computes it."""
    x0, x1, x2, x3, x4, x5 = (fluxT[0, i], fluxT[1, i], fluxT[2, i], fluxT[3, i],
                              fluxT[4, i], fluxT[5, i])
    avmago = 0.0 + x0 * a[0]
    avmago = avmago + x1 * a[1]
    avmago = avmago + x2 * a[2]
    avmago = avmago + x3 * a[3]
    avmago = avmago + x4 * a[4]
    avmago = avmago + x5 * a[5]
    avmagt = 0.0 + x0 * x0 * b[0]
    avmagt = avmagt + x1 * x1 * b[1]
    avmagt = avmagt + x2 * x2 * b[2]
    avmagt = avmagt + x3 * x3 * b[3]
    avmagt = avmagt + x4 * x4 * b[4]
    avmagt = avmagt + x5 * x5 * b[5]
    return avmago / avmagt if avmagt > 0 else -999.0


@njit(cache=CACHE, nogil=True, error_model="numpy")
def _fit_any(fluxT, abinvsabsq, invsabsq, s2n, invsab, chi2, avo, avt):
    """As ``_fit6`` for any number of bands (bands outer, models inner)."""
    nb = fluxT.shape[0]
    nlib = fluxT.shape[1]
    for i in range(nlib):
        avo[i] = 0.0
        avt[i] = 0.0
        chi2[i] = 0.0
    for k in range(nb):
        a = abinvsabsq[k]
        b = invsabsq[k]
        f = fluxT[k]
        for i in range(nlib):
            fluxin = f[i]
            avo[i] += fluxin * a
            avt[i] += fluxin * fluxin * b
    for i in range(nlib):
        dmloc = -999.0
        if avt[i] > 0:
            dmloc = avo[i] / avt[i]
        avo[i] = dmloc                      # the scaling, from here on
    for k in range(nb):
        sk = s2n[k]
        b = invsab[k]
        f = fluxT[k]
        for i in range(nlib):
            inter = sk - avo[i] * f[i] * b
            chi2[i] += inter * inter


@njit(cache=CACHE, nogil=True, error_model="numpy")
def _flags(fluxT, mag0, red, dm_in_lo, dm_in_hi, dm_out_lo, dm_out_hi, ab, busnorma, busul,
           nbul, prior_lo, prior_hi, use_prior, funz0, chi2, dm, sure):
    """``onesource::fit``'s upper limits and absolute-magnitude prior (``MAG_ABS``,
    ``MAG_REF``) on every model's chi-square; returns the minimum chi-square below
    HIGH_CHI2 (HIGH_CHI2 if none).

    The prior without a branch per model (the loop vectorises): a scaling ``dm`` surely
    inside the prior's range is kept, one surely outside is rejected (``dm_in_*``,
    ``dm_out_*``: 1e-9 relative margins around the bounds); LePhare's own test with log10
    for the others (a few per object, flagged in ``sure``) and the z = 0 models."""
    nb = ab.shape[0]
    nlib = chi2.shape[0]
    if nbul > 0:
        for i in range(nlib):
            for k in range(nb):
                if (dm[i] * busul[k] * fluxT[k, i]) > ab[k] and busnorma[k] == 1:
                    chi2[i] = HIGH_CHI2
    if use_prior:
        nsure = 0
        for i in range(nlib):
            d = dm[i]
            inside = (dm_in_lo[i] < d) & (d < dm_in_hi[i])
            outside = (d > dm_out_hi[i]) | ((d > 0) & (d < dm_out_lo[i]))
            hiz = red[i] >= 1.e-10
            reject = hiz & outside & (inside == False)   # noqa: E712 (numba booleans)
            chi2[i] = HIGH_CHI2 if reject else chi2[i]
            ok = hiz & (inside | outside)
            sure[i] = ok
            nsure += ok
        if nsure < nlib:
            for i in range(nlib):
                if sure[i]:
                    continue
                abs_mag = mag0[i] - 2.5 * np.log10(dm[i])
                if red[i] < 1.e-10:
                    abs_mag = abs_mag - funz0
                if abs_mag <= prior_lo or abs_mag >= prior_hi:
                    chi2[i] = HIGH_CHI2
    chimin = HIGH_CHI2
    for i in range(nlib):
        c = chi2[i]
        if c < HIGH_CHI2:
            if chimin > c:
                chimin = c
    return chimin


@njit(cache=CACHE, nogil=True, error_model="numpy")
def _pdf_add(chi2, t0, t1, chimin, pos, pdf, thr, sref):
    """generatePDF's BAY_ZG sum over the models ``t0:t1`` (in model order). A term below
    2^-54 of its bin's partial sum cannot change it (less than half an ulp): its exp is
    skipped; thr[p] = ln(sref[p]) - 37.5 with sref[p] <= the partial sum (54 ln 2 =
    37.43)."""
    for i in range(t0, t1):
        c = chi2[i - t0]
        if c < HIGH_CHI2:
            x = -0.5 * (c - chimin)
            p = pos[i]
            if x >= thr[p]:
                pdf[p] += np.exp(x)
                if pdf[p] > 2.0 * sref[p]:
                    sref[p] = pdf[p]
                    thr[p] = max(np.log(pdf[p]) - 37.5, EXP_UNDERFLOW)


@njit(cache=CACHE, nogil=True, error_model="numpy")
def _normalise(pdf, xaxis):
    nx = xaxis.shape[0]
    somme = 0.0
    for k in range(nx - 1):
        somme += (pdf[k] + pdf[k + 1]) / 2. * (xaxis[k + 1] - xaxis[k])
    if somme > 0:
        # PDF::normalization; the wheel multiplies by the reciprocal (measured)
        inv = 1.0 / somme
        for k in range(nx):
            pdf[k] = pdf[k] * inv


@njit(cache=CACHE, nogil=True, error_model="numpy")
def _one_object(mag, err, context, fluxT, mag0, red, dm_in_lo, dm_in_hi, dm_out_lo,
                dm_out_hi, plo, phi, pos, xaxis, min_err, fac_err, a0, gbcont, contforb, prior_lo,
                prior_hi, use_prior, funz0, threshold, pdf, chi2, avo, avt, sure):
    """One object over the whole library (LePhare's loop, with ``rm_discrepant``): its
    BAY_ZG PDF into ``pdf`` (zeros on entry)."""
    nb = mag.shape[0]
    nx = xaxis.shape[0]
    ab = np.empty(nb)
    sab = np.empty(nb)
    busnorma = np.empty(nb, dtype=np.int64)
    busul = np.empty(nb, dtype=np.int64)
    ab_ori = np.empty(nb)
    nbul = _prep(mag, err, nb, gbcont, contforb, context, min_err, fac_err, a0, ab, sab,
                 busnorma, busul, ab_ori)
    chimin = _fit(fluxT, mag0, red, dm_in_lo, dm_in_hi, dm_out_lo, dm_out_hi, plo, phi, ab,
                  sab, busnorma, busul, nbul, prior_lo, prior_hi, use_prior, funz0, chi2, avo, avt,
                  sure)
    # rm_discrepant (galaxy library only: the min over types is the galaxy min)
    improved = chimin
    nremoved = 0
    while improved > threshold and nremoved < 2:
        fldis = -99
        for k in range(nb):
            if busnorma[k] == 1:
                busnorma[k] = 0
                newmin = _fit(fluxT, mag0, red, dm_in_lo, dm_in_hi, dm_out_lo, dm_out_hi, plo,
                              phi, ab, sab, busnorma, busul, nbul, prior_lo, prior_hi, use_prior,
                              funz0, chi2, avo, avt, sure)
                if improved > newmin:
                    improved = newmin
                    fldis = k
                busnorma[k] = 1
                chimin = newmin
        if fldis >= 0:
            busnorma[fldis] = 0
            chimin = _fit(fluxT, mag0, red, dm_in_lo, dm_in_hi, dm_out_lo, dm_out_hi, plo, phi,
                          ab, sab, busnorma, busul, nbul, prior_lo, prior_hi, use_prior, funz0,
                          chi2, avo, avt, sure)
            nremoved += 1
        else:
            break
    thr = np.full(nx, EXP_UNDERFLOW)
    sref = np.zeros(nx)
    _pdf_add(chi2, 0, chi2.shape[0], chimin, pos, pdf, thr, sref)
    _normalise(pdf, xaxis)


@njit(cache=CACHE, nogil=True, error_model="numpy")
def fit_chunk(mags, errs, contexts, fluxT, mag0, red, dm_in_lo, dm_in_hi, dm_out_lo,
              dm_out_hi, plo, phi, pos, xaxis,
              min_err, fac_err, a0, gbcont, contforb, prior_lo, prior_hi, use_prior, funz0,
              threshold):
    """BAY_ZG PDFs (LePhare's grid ``xaxis``, LePhare's normalisation) of every object."""
    n = mags.shape[0]
    nlib = fluxT.shape[1]
    out = np.zeros((n, xaxis.shape[0]))
    chi2 = np.empty(nlib)
    avo = np.empty(nlib)
    avt = np.empty(nlib)
    sure = np.empty(nlib, dtype=np.bool_)
    for j in range(n):
        _one_object(mags[j], errs[j], contexts[j], fluxT, mag0, red, dm_in_lo, dm_in_hi,
                    dm_out_lo, dm_out_hi, plo, phi, pos, xaxis, min_err, fac_err, a0, gbcont,
                    contforb, prior_lo, prior_hi, use_prior, funz0, threshold, out[j], chi2, avo,
                    avt, sure)
    return out



# ---------------------------------------------------------------- the tolerance kernel
# (``algorithms.lephare.exact: false``, the default). The same models, prior decisions and
# rm_discrepant as above; three differences, each bounded (docs/estimators.md):
#   * the chi-square in its algebraic form (``_fit6_tol``) for objects with
#     sum (S/N)^2 <= ALG_SFF_MAX (rounding ~1e-16 of it: < 1e-10 on chi2); LePhare's form
#     above that;
#   * exp by a polynomial (Cody-Waite reduction, degree-10 Taylor: relative error
#     < 3e-13), vectorised; terms below exp(XMIN) of the best model are left out
#     (LePhare keeps them down to underflow): at most nlib * 4.3e-18 of the PDF's peak
#     (412,370 models: 1.8e-12);
#   * the sum over each redshift's models in another order: the library sorted by
#     redshift, in tiles of TILE models that stay in cache while a block of BLOCK objects
#     is fitted against them; tile by tile, the running minimum chi-square (within
#     1/1024, computed in the chi-square pass) is the reference of the sums and rescales
#     them when a tile lowers it (one pass).
# Objects with upper limits, other band counts, no prior, or a best chi-square above
# RM_DISCREPANT_BD (LePhare's band removal) go through the exact kernel above.
XMIN = -40.0
LOG2E = 1.4426950408889634
LN2HI = 6.93147180369123816490e-01     # fdlibm's split of ln 2 (k * LN2HI is exact)
LN2LO = 1.90821492927058770002e-10
TWO_M62 = 2.168404344971009e-19        # 2 ** -62
ALG_SFF_MAX = 1.0e5
MIN_SCALE = 1024.0


@njit(cache=CACHE, nogil=True, error_model="numpy", fastmath={"reassoc", "contract", "nsz"})
def _exp_sum(buf, s0, s1, m):
    """sum of exp(-(c - m)/2) over ``buf[s0:s1]`` for c < HIGH_CHI2 and -(c - m)/2 >= XMIN
    (vectorised: polynomial exp, 2^k from an integer shift)."""
    acc = 0.0
    for i in range(s0, s1):
        c = buf[i]
        x = -0.5 * (c - m)
        ok = (x >= XMIN) & (c < HIGH_CHI2)
        x = x if ok else 0.0
        k = np.floor(x * LOG2E + 0.5)                   # k in [-58, 0]
        r = x - k * LN2HI
        r = r - k * LN2LO
        p = 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        p = p * r + 1.0
        two_k = np.float64(np.int64(1) << (np.int64(62) + np.int64(k))) * TWO_M62
        acc += (p * two_k) if ok else 0.0
    return acc


@njit(cache=CACHE, nogil=True, error_model="numpy")
def _min_approx(buf, s0, s1):
    """min of ``buf[s0:s1]`` within 1/1024 (an integer reduction: the compiler vectorises
    it, not a float one)."""
    m = np.int64(HIGH_CHI2 * MIN_SCALE)
    for i in range(s0, s1):
        m = min(m, np.int64(buf[i] * MIN_SCALE))
    return m / MIN_SCALE


@njit(cache=CACHE, nogil=True, error_model="numpy", fastmath={"contract"})
def _fit6_tol(fluxT, a, b, sff, ilo, ihi, olo, ohi, chi2, sure):
    """``_fit6_prior`` for the tolerance kernel: the chi-square in its algebraic form,
    ``sff - d * avmago`` (sum (s2n - d x invsab)^2 = sff - 2 d avmago + d^2 avmagt with
    d = avmago / avmagt, ``sff`` = sum s2n^2), the sums with fused multiply-adds: half the
    operations. ``d`` differs from LePhare's by a few 1e-16 (relative): the prior's sure
    decisions have 1e-9 margins (``ilo`` .. ``ohi``: the bounds with them, NaN for the
    z = 0 models), the others are LePhare's test on ``_scale6``'s d. Returns how many
    are not sure and the least chi-square of the models surely inside the prior, x
    MIN_SCALE as an integer (the integer minimum vectorises, a float one does not: in
    this loop it costs ~0.1 ns per model, a pass of its own ~0.5 ns)."""
    f0, f1, f2, f3, f4, f5 = fluxT[0], fluxT[1], fluxT[2], fluxT[3], fluxT[4], fluxT[5]
    a0, a1, a2, a3, a4, a5 = a[0], a[1], a[2], a[3], a[4], a[5]
    b0, b1, b2, b3, b4, b5 = b[0], b[1], b[2], b[3], b[4], b[5]
    nsure = 0
    mn = np.int64(HIGH_CHI2 * MIN_SCALE)
    for i in range(fluxT.shape[1]):
        x0, x1, x2, x3, x4, x5 = f0[i], f1[i], f2[i], f3[i], f4[i], f5[i]
        avmago = x0 * a0 + x1 * a1 + x2 * a2 + x3 * a3 + x4 * a4 + x5 * a5
        avmagt = (x0 * x0 * b0 + x1 * x1 * b1 + x2 * x2 * b2 + x3 * x3 * b3 + x4 * x4 * b4
                  + x5 * x5 * b5)
        d = avmago / avmagt if avmagt > 0 else -999.0
        c = sff - d * avmago
        inside = (ilo[i] < d) & (d < ihi[i])
        outside = (d > ohi[i]) | ((d > 0) & (d < olo[i]))
        chi2[i] = HIGH_CHI2 if outside else c
        mn = min(mn, np.int64((c if inside else HIGH_CHI2) * MIN_SCALE))
        ok = inside | outside
        sure[i] = ok
        nsure += ok
    return fluxT.shape[1] - nsure, mn


@njit(cache=CACHE, nogil=True, error_model="numpy")
def _fit_tiles(A, B, S, I, SFF, ft, tplo, tphi, tb4, tmag0, tred, nreal, tstart, tile_bins, segs,
               nx, prior_lo, prior_hi, funz0, sff_max, pdf, m):
    """The tolerance kernel over a block of objects (coefficients ``A`` = ab/sab^2, ``B``
    = 1/sab^2, ``S`` = ab/sab, ``I`` = 1/sab per band, 0 for unused bands; ``SFF`` = sum
    S^2): unnormalised BAY_ZG sums into ``pdf`` (zeros on entry), relative to each
    object's best chi-square (within 1/1024), returned in ``m``. ``ft``: the library in
    tiles (tiles, bands, models), models sorted by redshift (``library_tiles``). Terms at
    least exp(XMIN) of the best model are all in the sums; a tile whose best model is
    below that is skipped whole, and a smaller term may be in or out depending on the
    reference when its tile was summed."""
    n = A.shape[0]
    width = ft.shape[2]
    buf = np.empty(width)
    sure = np.empty(width, dtype=np.bool_)
    for j in range(n):
        m[j] = HIGH_CHI2
    for t in range(ft.shape[0]):
        ftt = ft[t]
        nr = nreal[t]
        for j in range(n):
            alg = SFF[j] <= sff_max
            if alg:
                namb, mn = _fit6_tol(ftt, A[j], B[j], SFF[j], tb4[t, 0], tb4[t, 1], tb4[t, 2],
                                     tb4[t, 3], buf, sure)
            else:
                namb = _fit6_prior(ftt, A[j], B[j], S[j], I[j], tplo[t], tphi[t], buf, sure)
            if namb:                                    # LePhare's own prior test
                for i in range(nr):
                    if sure[i]:
                        continue
                    abs_mag = tmag0[t, i] - 2.5 * np.log10(_scale6(ftt, i, A[j], B[j]))
                    if tred[t, i] < 1.e-10:
                        abs_mag = abs_mag - funz0
                    if abs_mag <= prior_lo or abs_mag >= prior_hi:
                        buf[i] = HIGH_CHI2
                    elif alg:
                        mn = min(mn, np.int64(buf[i] * MIN_SCALE))
            # the tile's best chi-square (within 1/1024), after the prior
            tmin = mn / MIN_SCALE if alg else _min_approx(buf, 0, nr)
            if tmin < m[j]:                             # a better model: rescale the sums
                if m[j] < HIGH_CHI2:
                    f = np.exp(-0.5 * (m[j] - tmin))
                    for q in range(nx):
                        pdf[j, q] *= f
                m[j] = tmin
            mj = m[j]
            if tmin >= HIGH_CHI2 or -0.5 * (tmin - mj) < XMIN:
                continue                                # nothing of this tile counts
            for p in range(tile_bins[t, 0], tile_bins[t, 1]):   # bin by bin
                s0 = max(segs[p] - tstart[t], 0)
                s1 = min(segs[p + 1] - tstart[t], nr)
                pdf[j, p] += _exp_sum(buf, s0, s1, mj)


@njit(cache=CACHE, nogil=True, error_model="numpy")
def fit_chunk_tol(mags, errs, contexts, fluxT, mag0, red, dm_in_lo, dm_in_hi, dm_out_lo,
                  dm_out_hi, plo, phi, pos, xaxis, min_err, fac_err, a0, gbcont, contforb,
                  prior_lo, prior_hi, use_prior, funz0, threshold, ft, tplo, tphi, tb4, tmag0,
                  tred, nreal, tstart, tile_bins, segs, block, sff_max):
    """As ``fit_chunk`` with the tolerance kernel (blocks of ``block`` objects) where it
    applies, the exact kernel elsewhere; also returns how many objects the tolerance
    kernel gave."""
    n = mags.shape[0]
    nb = mags.shape[1]
    nx = xaxis.shape[0]
    nlib = fluxT.shape[1]
    out = np.zeros((n, nx))
    A = np.zeros((n, nb))
    B = np.zeros((n, nb))
    S = np.zeros((n, nb))
    II = np.zeros((n, nb))
    SFF = np.zeros(n)
    tol = np.zeros(n, dtype=np.bool_)
    ab = np.empty(nb)
    sab = np.empty(nb)
    busnorma = np.empty(nb, dtype=np.int64)
    busul = np.empty(nb, dtype=np.int64)
    ab_ori = np.empty(nb)
    for j in range(n):                      # _fit's coefficients, per object
        nbul = _prep(mags[j], errs[j], nb, gbcont, contforb, contexts[j], min_err, fac_err,
                     a0, ab, sab, busnorma, busul, ab_ori)
        if nb != 6 or nbul != 0 or not use_prior:
            continue
        tol[j] = True
        for k in range(nb):
            inv = busnorma[k] * 1.0 / sab[k]
            II[j, k] = inv
            B[j, k] = inv * inv
            S[j, k] = ab[k] * inv
            A[j, k] = ab[k] * B[j, k]
            SFF[j] += S[j, k] * S[j, k]
    idx = np.nonzero(tol)[0]
    m = np.empty(block)
    pdfb = np.zeros((block, nx))
    for a in range(0, idx.shape[0], block):
        sel = idx[a:a + block]
        k = sel.shape[0]
        pdfb[:k] = 0.0
        _fit_tiles(A[sel], B[sel], S[sel], II[sel], SFF[sel], ft, tplo, tphi, tb4, tmag0, tred,
                   nreal, tstart, tile_bins, segs, nx, prior_lo, prior_hi, funz0,
                   sff_max, pdfb[:k], m[:k])
        for q in range(k):
            j = sel[q]
            if m[q] + 0.01 > threshold * (1 - 1e-6):    # rm_discrepant, or no model: exact
                tol[j] = False
                continue
            out[j] = pdfb[q]
            _normalise(out[j], xaxis)
    chi2 = np.empty(nlib)
    avo = np.empty(nlib)
    avt = np.empty(nlib)
    sure = np.empty(nlib, dtype=np.bool_)
    ntol = 0
    for j in range(n):
        if tol[j]:
            ntol += 1
            continue
        _one_object(mags[j], errs[j], contexts[j], fluxT, mag0, red, dm_in_lo, dm_in_hi,
                    dm_out_lo, dm_out_hi, plo, phi, pos, xaxis, min_err, fac_err, a0, gbcont,
                    contforb, prior_lo, prior_hi, use_prior, funz0, threshold, out[j], chi2,
                    avo, avt, sure)
    return out, ntol


def library_tiles(fluxT, plo, phi, mag0, red, pos, nx, width):
    """The library sorted by redshift bin (LePhare's order within a bin), cut in tiles of
    ``width`` models (the last one padded): (ft, tplo, tphi, tb4, tmag0, tred, nreal, tstart,
    tile_bins, segs); tile t holds the models of the bins ``tile_bins[t]:tile_bins[t+1]``
    (a bin can span tiles), ``segs[p]`` is where bin p starts."""
    order = np.argsort(pos, kind="stable")
    segs = np.searchsorted(pos[order], np.arange(nx + 1)).astype(np.int64)
    nlib, nb = fluxT.shape[1], fluxT.shape[0]
    tstart = np.arange(0, nlib, width, dtype=np.int64)
    nt = tstart.shape[0]
    nreal = np.minimum(tstart + width, nlib) - tstart
    # bins overlapping tile t: from the bin of its first model to that of its last
    first = np.searchsorted(segs, tstart, side="right") - 1
    last = np.searchsorted(segs, tstart + nreal - 1, side="right") - 1
    tile_bins = np.stack([first, last + 1], axis=1).astype(np.int64)
    w = int(nreal.max())
    ft = np.zeros((nt, nb, w))
    tplo, tphi = np.full((nt, w), np.nan), np.full((nt, w), np.nan)
    tb4 = np.full((nt, 4, w), np.nan)       # the bounds with their margins: _fit6_tol
    tmag0, tred = np.zeros((nt, w)), np.ones((nt, w))
    for t in range(nt):
        o = order[tstart[t]:tstart[t] + nreal[t]]
        k = nreal[t]
        ft[t, :, :k] = fluxT[:, o]
        tplo[t, :k], tphi[t, :k], tmag0[t, :k], tred[t, :k] = plo[o], phi[o], mag0[o], red[o]
        tb4[t, :, :k] = (plo[o] * (1 + 1e-9), phi[o] * (1 - 1e-9), plo[o] * (1 - 1e-9),
                         phi[o] * (1 + 1e-9))
    return ft, tplo, tphi, tb4, tmag0, tred, nreal, tstart, tile_bins, segs


def _kw(config: dict, key: str, default: str) -> str:
    v = config.get(key, default)
    v = getattr(v, "value", v)
    return str(v).strip() if v is not None else default


class FastLephare:
    """Standalone fast path (see the module docstring): ``FastLephare(model, params)``,
    ``.estimate(data) -> (pdf on the pipeline grid, {})``. ``model``: the pipeline's
    LephareInformer model; ``params``: the LephareEstimator parameters of the run
    (``run_dir``: the library directory, LEPHAREWORK)."""

    # objects per fit_chunk call: the PDFs of one slice (LePhare's grid, its qp ensemble,
    # the pipeline grid) are ~3 x 8 x 301 x SLICE bytes beside the chunk's output
    SLICE = 8192
    # tolerance kernel: models per library tile (6 x 8 x TILE bytes stay in L2 cache while
    # a block of BLOCK objects is fitted against them)
    TILE = 4096
    BLOCK = 64
    ALG_SFF_MAX = ALG_SFF_MAX

    def __init__(self, model: dict, params: dict):
        from .. import PipelineError
        from . import lephare as lpalgo
        from .runner import grid_pdf_of_ensemble

        self._grid_pdf = grid_pdf_of_ensemble
        self.params = dict(params)
        self.bands = list(params["bands"])
        self.err_bands = list(params["err_bands"])
        lephare_dir = os.environ["LEPHAREDIR"]
        work = params.get("run_dir") or os.environ["LEPHAREWORK"]
        lpalgo.use_env(lephare_dir, work)
        import lephare as lp

        config = lpalgo.resolve_model_config(dict(model["lephare_config"]), lephare_dir)
        if params.get("use_inform_offsets", True) and model.get("offsets") is not None:
            config["APPLY_SYSSHIFT"] = ",".join(str(o) for o in model["offsets"])
        if int(params.get("posterior_output", 11)) != 11:
            raise PipelineError("lephare fast path: only posterior_output 11 (BAY_ZG); "
                                "set algorithms.lephare.fast: false")
        for key, ok in (("ZFIX", "NO"), ("NZ_PRIOR", "-1"), ("INP_TYPE", "M"),
                        ("CAT_MAG", "AB")):
            if _kw(config, key, ok).upper() != ok:
                raise PipelineError(f"lephare fast path: {key}={_kw(config, key, ok)} is not "
                                    f"supported (only {ok}); set algorithms.lephare.fast: false")
        keymap = lp.all_types_to_keymap(config)
        photz = lpalgo._quiet(lp.PhotoZ, keymap)
        lib = photz.fullLib
        if not all(s.is_gal() for s in lib):
            raise PipelineError("lephare fast path: the library holds star/QSO models "
                                "(ZPHOTLIB); only galaxy libraries are supported; set "
                                "algorithms.lephare.fast: false")
        flux = np.array(photz.flux, dtype=np.float64)
        self.fluxT = np.ascontiguousarray(flux.T)          # (bands, models)
        self.red = np.array(photz.zLib, dtype=np.float64)
        nb = flux.shape[1]
        if nb != len(self.bands):
            raise PipelineError(f"lephare: the library has {nb} filters, the run "
                                f"{len(self.bands)} bands")
        # MAG_ABS prior (PhotoZ constructor)
        mabs = [float(x) for x in _kw(config, "MAG_ABS", "0.,0.").split(",")[:2]]
        lo, hi = min(mabs), max(mabs)
        babs = int(_kw(config, "MAG_REF", "1").split(",")[0]) - 1
        if babs < 0:
            lo = hi = 99.0
        self.prior = (lo, hi, bool(lo < 0 and hi < 0))
        z0 = np.array([s.index_z0 for s in lib], dtype=np.int64)
        mag_z0 = {int(i): float(lib[int(i)].mag[babs]) for i in np.unique(z0)} if babs >= 0 \
            else {}
        self.mag0 = np.array([mag_z0.get(int(i), 0.0) for i in z0], dtype=np.float64)
        # scalings surely inside the prior (abs mag = mag0 - 2.5 log10(dm) in (lo, hi)),
        # with a 1e-9 relative margin; log10 is called outside them (LePhare's test)
        with np.errstate(over="ignore", under="ignore"):
            self.dm_in_lo = 10.0 ** ((self.mag0 - hi) / 2.5) * (1 + 1e-9)
            self.dm_in_hi = 10.0 ** ((self.mag0 - lo) / 2.5) * (1 - 1e-9)
            self.dm_out_lo = 10.0 ** ((self.mag0 - hi) / 2.5) * (1 - 1e-9)
            self.dm_out_hi = 10.0 ** ((self.mag0 - lo) / 2.5) * (1 + 1e-9)
            # the same bounds without their margins, NaN (never sure) for the z = 0
            # models (their prior has the funz0 term): _fit6_prior
            zero = self.red < 1.e-10
            self.plo = np.where(zero, np.nan, 10.0 ** ((self.mag0 - hi) / 2.5))
            self.phi = np.where(zero, np.nan, 10.0 ** ((self.mag0 - lo) / 2.5))
        h0, om, ol = (float(x) for x in _kw(config, "COSMOLOGY", "70,0.3,0.7").split(","))
        gridz = np.array(photz.gridz, dtype=np.float64)
        self.funz0 = float(lp.cosmo(h0, om, ol).distMod(gridz[1] / 20.))
        # BAY_ZG grid and the bin of every model: LePhare's own PDF object
        src = lp.onesource(0, photz.gridz)
        pdfz = src.pdfmap[11]
        self.xaxis = np.array(pdfz.xaxis, dtype=np.float64)
        zs = np.unique(self.red)
        idx = {float(z): int(pdfz.index(float(z))) for z in zs}
        self.pos = np.array([idx[float(z)] for z in self.red], dtype=np.int64)
        self.min_err = np.array([float(x) for x in _kw(config, "ERR_SCALE", "0.0").split(",")])
        self.fac_err = np.array([float(x) for x in _kw(config, "ERR_FACTOR", "1.0").split(",")])
        if len(self.min_err) not in (1, nb) or len(self.fac_err) not in (1, nb):
            raise PipelineError("lephare: ERR_SCALE / ERR_FACTOR need 1 or one value per band")
        # PhotoZ::compute_offsets: APPLY_SYSSHIFT (one per band) wins over AUTO_ADAPT
        shift = [x for x in _kw(config, "APPLY_SYSSHIFT", "").split(",") if x.strip()]
        if len(shift) == nb:
            self.a0 = np.array([float(x) for x in shift])
        elif _kw(config, "AUTO_ADAPT", "NO").upper().startswith("Y"):
            raise PipelineError("lephare fast path: AUTO_ADAPT at estimate time is not "
                                "supported; set algorithms.lephare.fast: false")
        else:
            self.a0 = np.zeros(nb)
        self.gbcont = int(_kw(config, "GLB_CONTEXT", "-99").split(",")[0])
        self.contforb = int(_kw(config, "FORB_CONTEXT", "0").split(",")[0])
        self.threshold = float(_kw(config, "RM_DISCREPANT_BD", "1.e9").split(",")[0])
        # the kernel: exact (bit-identical to LePhare) or the tolerance kernel (default);
        # set from algorithms.lephare.exact by lephare._before_call before each call
        self.exact = False
        self._tiles = None
        self.tolerance_rows = 0             # objects the tolerance kernel gave (tests)
        del photz, lib, src

    def tiles(self):
        if self._tiles is None:
            self._tiles = library_tiles(self.fluxT, self.plo, self.phi, self.mag0, self.red,
                                        self.pos, self.xaxis.shape[0], self.TILE)
        return self._tiles

    def estimate(self, data: dict):
        import qp

        n = len(data[self.bands[0]])
        mags = np.ascontiguousarray(np.stack([np.asarray(data[b], dtype=np.float64)
                                              for b in self.bands], axis=1))
        errs = np.ascontiguousarray(np.stack([np.asarray(data[e], dtype=np.float64)
                                              for e in self.err_bands], axis=1))
        # RAIL's context (_rail_to_lephare_input): bands with mag > 0 and err > 0
        ctx = np.zeros(n, dtype=np.int64)
        for k in range(len(self.bands)):
            ok = (mags[:, k] > 0) & ~np.isnan(mags[:, k]) & (errs[:, k] > 0) & \
                ~np.isnan(errs[:, k])
            ctx += ok.astype(np.int64) * 2 ** k
        lo, hi, use_prior = self.prior
        out = None
        for a in range(0, max(n, 1), self.SLICE):       # memory: a slice's PDFs at a time
            b = min(n, a + self.SLICE)
            args = (mags[a:b], errs[a:b], ctx[a:b], self.fluxT, self.mag0, self.red,
                    self.dm_in_lo, self.dm_in_hi, self.dm_out_lo, self.dm_out_hi, self.plo,
                    self.phi, self.pos, self.xaxis, self.min_err, self.fac_err, self.a0,
                    self.gbcont, self.contforb, lo, hi, use_prior, self.funz0,
                    self.threshold)
            if self.exact:
                pdf = fit_chunk(*args)
            else:
                pdf, ntol = fit_chunk_tol(*args, *self.tiles(), self.BLOCK, self.ALG_SFF_MAX)
                self.tolerance_rows += int(ntol)
            ens = qp.Ensemble(qp.interp, data=dict(xvals=self.xaxis, yvals=pdf))
            grid = self._grid_pdf(ens, self.params)
            if out is None:
                out = np.empty((n, grid.shape[1]), dtype=grid.dtype)
            out[a:b] = grid
            del pdf, ens, grid
        return out, {}
