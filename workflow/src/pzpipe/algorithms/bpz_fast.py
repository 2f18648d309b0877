"""Vectorised BPZ: RAIL's ``BPZliteEstimator`` numbers, ~30x faster.

RAIL (pz-rail-bpz 2.2.0, ``rail.estimation.algos.bpz_lite``) evaluates BPZ one
object at a time in Python (``desc_bpz.p_c_z_t`` + ``prior_from_dict``) and
spends ~95% of its time in that loop. ``FastBPZ`` does the same computation
for blocks of objects:

* everything that does not depend on the object (template fluxes on the z
  grid, their squares, ``z**alpha`` of the prior) is computed once per model;
* the magnitude preprocessing is RAIL's own (already vectorised) code, run on
  copies of the caller's arrays with the caller's dtypes (the DC2 files are
  float32, and so are RAIL's fluxes, errors and chi^2 constant ``foo``);
* the chi^2 / prior / posterior arithmetic runs in numba kernels in numpy's
  operation order (same divisions, sequential sums over bands and z, numpy's
  pairwise sums over templates and z), and every ``exp``/``power`` is numpy's
  own, applied to whole blocks;
* the chi^2 terms divide by the object's ef**2 in each band: those quotients
  are computed from one reciprocal per (object, band) with two FMA correction
  steps, which gives the IEEE quotient bit for bit (Markstein's theorem; see
  ``_fma_div``) at a fraction of the divider's cost;
* the priors of templates of one broad type are identical, so they are
  computed once per type; the Bayesian-likelihood branch of ``p_c_z_t``, which
  RAIL computes and then ignores, is skipped.

Result: bit-identical PDFs, ``zmode``, ``tb``, ``todds`` and ``zmean`` on the
DC2 validation sample (tests/test_algo_bpz.py compares with RAIL itself with
exact equality), ~64,000 objects/s on one core vs ~2,200 for RAIL
(benchmarks/bpz_speed.py). ``exact=False`` multiplies by 1/err**2 instead of
dividing (not RAIL's numbers: PDFs within ~1e-12 relative).

Usage::

    model = pickle.load(open("model.pkl", "rb"))     # what BPZliteInformer writes
    fb = FastBPZ(model, dict(bpz_ref_data_path="resources/bpz_data"))
    pdf, extras = fb.estimate({"mag_u_lsst": ..., "mag_err_u_lsst": ..., ...})
    extras["zmode"], extras["tb"], extras["todds"], extras["zmean"]

``pdf`` (N, nzbins) is what RAIL puts in its output ensemble
(``ens.objdata["yvals"]`` on ``np.linspace(zmin, zmax, nzbins)``): BPZ's
posterior (normalised to sum 1, values below ``p_min * max`` set to 0), then
divided by its trapezoid integral twice, as qp 1.1.4 does when it builds the
``interp`` ensemble.

RAIL behaviours reproduced on purpose:

* non-detections are found with ``np.isclose(mag, nondetect_val)`` (``isnan``
  if ``nondetect_val`` is NaN); magnitudes of exactly 99 are treated as
  non-detections (zero flux) in any case, but take their error column as the
  1-sigma limit only when ``nondetect_val`` matches; a NaN magnitude with the
  default ``nondetect_val=99`` is no non-detection: that object's PDF is NaN,
  ``zmode = zmin``, ``tb = 0``, ``todds = NaN`` (RAIL warns, does not fail);
* ``unobserved_val`` (-99) bands get zero flux and error 1e28 (float32 inputs
  overflow ``err**2`` to inf, harmlessly);
* the posterior is only normalised if its sum exceeds 1e-8 (``np.isclose``);
* ``zmode`` and ``tb`` are taken before the ``p_min`` cut; ``tb`` is a float;
* the prior magnitude is clipped to [m0, 32].
"""
from __future__ import annotations

import os
import glob
from typing import Any, Mapping

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

__all__ = ["FastBPZ", "DEFAULTS", "load_flux_templates"]

from ._numba import CACHE as _CACHE
from ._numba import _pw_block
from ._numba import pairwise_sum as _pairwise_sum_any

_LSST = "ugrizy"


#: Defaults of BPZliteEstimator (pz-rail-bpz 2.2.0 / pz-rail-base 2.0.11).
DEFAULTS: dict[str, Any] = dict(
    bands=[f"mag_{b}_lsst" for b in _LSST],
    err_bands=[f"mag_err_{b}_lsst" for b in _LSST],
    ref_band="mag_i_lsst",
    nondetect_val=99.0,
    unobserved_val=-99.0,
    mag_limits=dict(
        mag_u_lsst=27.79, mag_g_lsst=29.04, mag_r_lsst=29.06,
        mag_i_lsst=28.62, mag_z_lsst=27.98, mag_y_lsst=27.05,
    ),
    zmin=0.0,
    zmax=3.0,
    nzbins=301,
    dz=0.01,
    bpz_ref_data_path="None",
    spectra_file="CWWSB4.list",
    madau_flag="no",
    no_prior=False,
    p_min=0.005,
    gauss_kernel=0.0,
    zp_errors=[0.1] * 6,
    mag_err_min=0.005,
    filter_list=[f"DC2LSST_{b}" for b in _LSST],
    override_file_offsets=False,
    zp_offsets=[0.0] * 6,
    # FastBPZ only: objects per kernel block (64 keeps a block's likelihood
    # in L2), threads (1 = serial; one job per core is the usual batch
    # layout), and exact=True to divide as RAIL does (bit-identical chi^2);
    # exact=False multiplies by 1/ef**2 instead (~1.3x faster, chi^2 differs
    # from RAIL's in the last bits). With exact=True, fma_division=True gets
    # RAIL's quotients bit for bit with FMAs instead of the divider (``_fma_div``,
    # ~3x faster chi^2); False: the hardware division.
    block_size=64,
    n_threads=1,
    exact=True,
    fma_division=True,
)


def _rail_defaults() -> dict[str, Any]:
    """DEFAULTS, refreshed from RAIL's own config declarations when importable."""
    out = dict(DEFAULTS)
    try:  # pragma: no cover - depends on the installed RAIL
        from rail.estimation.algos.bpz_lite import BPZliteEstimator

        for k, v in BPZliteEstimator.config_options.items():
            if k in out and hasattr(v, "default"):
                out[k] = v.default
    except Exception:
        pass
    return out


def _default_data_path() -> str:
    from rail.utils.path_utils import RAILDIR

    return os.path.join(RAILDIR, "rail/examples_data/estimation_data/data")


def load_flux_templates(data_path: str, spectra_file: str, filters, zgrid,
                        madau_flag: str = "no") -> np.ndarray:
    """Template fluxes (nz, nt, nf) on ``zgrid``, as BPZliteEstimator._load_templates.

    Missing AB files are generated with desc_bpz's ``ABflux`` (RAIL's generator)
    into a private temporary directory and moved into ``data_path/AB`` one by
    one with ``os.replace``, so concurrent readers never see a partial file.
    ``data_path`` must be writable then (RAIL's own copy inside site-packages
    should not be used). desc_bpz's global paths are restored afterwards.

    Parsing the 48 AB text files (~115,000 numbers) takes ~30 ms, paid by every worker
    that loads the model: the result is kept in ``AB/.pzpipe-cache/<key>.npy``, where
    the key is the sha256 of the spectra and filter names, the Madau flag, the grid and
    the bytes of every AB file used, so any change to them is a different key. The
    cache holds the array computed here (``np.save``/``np.load`` round-trip float64
    exactly); it is written atomically when the directory is writable, else skipped.
    """
    import hashlib

    from desc_bpz.useful_py3 import get_data, get_str, match_resol

    spectra = [s[:-4] for s in get_str(os.path.join(data_path, "SED", spectra_file))]
    ab_dir = os.path.join(data_path, "AB")
    mflag = "withmadau" if madau_flag == "yes" else "nomadau"
    names = [[f"{s}.{f}.{mflag}.AB" for f in filters] for s in spectra]
    missing = [(s, f) for s, row in zip(spectra, names) for f, n in zip(filters, row)
               if not os.path.exists(os.path.join(ab_dir, n))]
    if missing:
        _make_ab_files(data_path, missing, madau_flag)
    zgrid = np.ascontiguousarray(zgrid, dtype=np.float64)
    h = hashlib.sha256(repr((spectra, list(filters), mflag, zgrid.shape)).encode())
    h.update(zgrid.tobytes())
    for row in names:
        for name in row:
            with open(os.path.join(ab_dir, name), "rb") as fh:
                h.update(fh.read())
    cache = os.path.join(ab_dir, ".pzpipe-cache", h.hexdigest() + ".npy")
    shape = (len(zgrid), len(spectra), len(filters))
    if os.path.exists(cache):
        try:
            out = np.load(cache, allow_pickle=False)
            if out.shape == shape and out.dtype == np.float64:
                return out
        except (OSError, ValueError):
            pass                                     # unreadable: recompute, rewrite
    out = np.zeros(shape)
    for i, row in enumerate(names):
        for j, name in enumerate(row):
            zo, f_mod_0 = get_data(os.path.join(ab_dir, name), (0, 1))
            out[:, i, j] = match_resol(zo, f_mod_0, zgrid)
    _write_cache(cache, out)
    return out


def _write_cache(path: str, arr: np.ndarray) -> None:
    """np.save ``arr`` to ``path`` atomically; nothing if the directory is not writable."""
    import tempfile

    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        try:
            os.remove(tmp)
        except OSError:
            pass


def _make_ab_files(data_path: str, missing, madau_flag: str) -> None:
    import contextlib
    import io
    import tempfile

    from desc_bpz import paths
    from desc_bpz.bpz_tools_py3 import ABflux

    ab_dir = os.path.join(data_path, "AB")
    os.makedirs(ab_dir, exist_ok=True)
    saved = (paths.data_dir, paths.ab_dir, paths.sed_dir, paths.fil_dir,
             os.environ.get("BPZDATAPATH"))
    tmp = tempfile.mkdtemp(prefix=".ab-", dir=ab_dir)
    try:
        paths.set_data_dir(data_path)
        paths.set_ab_dir(tmp)
        os.environ["BPZDATAPATH"] = data_path
        mflag = "withmadau" if madau_flag == "yes" else "nomadau"
        with contextlib.redirect_stdout(io.StringIO()):  # ABflux prints a lot
            for s, f in missing:
                ABflux(s, f, madau_flag)
                name = f"{s}.{f}.{mflag}.AB"
                os.replace(os.path.join(tmp, name), os.path.join(ab_dir, name))
    finally:
        paths.data_dir, paths.ab_dir, paths.sed_dir, paths.fil_dir = saved[:4]
        if saved[4] is None:
            os.environ.pop("BPZDATAPATH", None)
        else:
            os.environ["BPZDATAPATH"] = saved[4]
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------
# numba kernels
# --------------------------------------------------------------------------
# Summation orders follow numpy's, so that sums (and hence normalisations,
# argmax ties, the p_min cut) are bit-identical to RAIL's numpy code:
# * reductions over a leading axis (over z in prior_function, tmarg) are
#   sequential;
# * reductions over a contiguous axis (templates in post.sum(axis=1), bands in
#   p_c_z_t, post_z.sum()) use numpy's pairwise_sum: sequential below 8
#   elements, 8 interleaved accumulators up to 128, recursive halving above.

_KT = 512  # tile of the (z, template) axis kept in L1 while looping over bands


def _pw_level(lower):
    @njit(cache=_CACHE, nogil=True, error_model="numpy", inline="always")
    def level(a, start, n):
        if n <= 128:
            return _pw_block(a, start, n)
        n2 = n // 2
        n2 -= n2 % 8
        return lower(a, start, n2) + lower(a, start + n2, n - n2)

    return level


# numpy's pairwise recursion for n <= 912 (3 levels above the 128-element blocks), inlined
# into the caller: ``_numba.pairwise_sum``'s out-of-line levels cost ~3x more per call on
# a 301-point grid (measured 175 vs 55 ns); same additions in the same order
_pw_l1 = _pw_level(_pw_block)
_pw_l2 = _pw_level(_pw_l1)
_pw_l3 = _pw_level(_pw_l2)


@njit(cache=_CACHE, nogil=True, error_model="numpy", inline="always")
def _pairwise_sum(a, start, n):
    """``np.add.reduce(a[start:start + n])`` bit for bit (numpy's pairwise order)."""
    if n <= 912:
        return _pw_l3(a, start, n)
    return _pairwise_sum_any(a, start, n)


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _seq_sum_rows(a, nrows, n, out):
    """out[r] = sequential sum of a[r, :n] (numpy's order for a reduction over
    a leading axis); up to eight rows at a time to hide the add latency."""
    r = 0
    while r + 8 <= nrows:
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        s4 = 0.0
        s5 = 0.0
        s6 = 0.0
        s7 = 0.0
        for i in range(n):
            s0 += a[r, i]
            s1 += a[r + 1, i]
            s2 += a[r + 2, i]
            s3 += a[r + 3, i]
            s4 += a[r + 4, i]
            s5 += a[r + 5, i]
            s6 += a[r + 6, i]
            s7 += a[r + 7, i]
        out[r] = s0
        out[r + 1] = s1
        out[r + 2] = s2
        out[r + 3] = s3
        out[r + 4] = s4
        out[r + 5] = s5
        out[r + 6] = s6
        out[r + 7] = s7
        r += 8
    while r < nrows:
        w = min(4, nrows - r)
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        if w == 4:
            for i in range(n):
                s0 += a[r, i]
                s1 += a[r + 1, i]
                s2 += a[r + 2, i]
                s3 += a[r + 3, i]
        elif w == 3:
            for i in range(n):
                s0 += a[r, i]
                s1 += a[r + 1, i]
                s2 += a[r + 2, i]
        elif w == 2:
            for i in range(n):
                s0 += a[r, i]
                s1 += a[r + 1, i]
        else:
            for i in range(n):
                s0 += a[r, i]
        out[r] = s0
        if w > 1:
            out[r + 1] = s1
        if w > 2:
            out[r + 2] = s2
        if w > 3:
            out[r + 3] = s3
        r += w


# ---- correctly rounded division by a per-(object, band) constant -----------
# RAIL divides every (template, z) term by the object's ef**2 in that band: 12 of the 13
# divisions per (template, z) node of chi^2, and the divider's throughput (~2 cycles per
# double, even vectorised) bounds ``_stage_a``. With a two-term reciprocal of b computed
# once per (object, band) (``_recip2``: one division, one FMA, one product),
#     yh = RN(1/b);  e = RN(1 - b*yh);  yl = RN(e*yh),
# x / b is obtained with one product and three FMAs (``_fma_div``):
#     q0 = RN(x*yh + RN(x*yl));  r = RN(x - b*q0);  q = RN(q0 + r*yh)
# and q == RN(x / b), the IEEE quotient, bit for bit (p = 53, round to nearest):
# * e = 1 - b*yh exactly (a multiple of ulp(b) ulp(yh) smaller than 2**-53 in magnitude,
#   relative to b*yh ~ 1), so 1/b = yh + e/b and |yh + yl - 1/b| < 2**-105 / b;
# * then |x*yh + RN(x*yl) - x/b| < 2**-104 |x/b|, far below half an ulp: q0 is a faithful
#   rounding of x/b (one of the two floats around it);
# * Markstein's theorem (Markstein 1990; Cornea-Hasegan, Golliver & Markstein 1999;
#   Muller et al., Handbook of Floating-Point Arithmetic, section "Newton-Raphson-based
#   division with an FMA"): if q0 is faithful and yh approximates 1/b within a relative
#   2**-p, then r = x - b*q0 is exact and RN(q0 + r*yh) = RN(x/b);
# * all of this holds barring underflow/overflow: ``_fma_div_ok`` restricts its use to
#   |x| in {0} U [2**-350, 2**350] and b in [2**-200, 2**200] (then yh, yl, x*yl and x/b
#   are normal numbers, and e_b + e_q0 >= -751 > e_min + p - 1 = -970 makes the
#   remainder exact); every other (object, band) - NaN, inf, zero or extreme errors or
#   fluxes - uses the hardware division. Signed zeros: x = -0 can give +0 instead of -0,
#   which is added to sums that start at +0.0, so the sums are identical.
# tests/test_algo_bpz.py checks ``_fma_div`` against ``/`` on ~11 million random and
# adversarial pairs (divisors with all-ones significands, quotients next to a midpoint).
_FMA_LO = 2.0 ** -200     # |flux| and ef**2 of an object band
_FMA_HI = 2.0 ** 200
_FMA_X_LO = 2.0 ** -350   # |dividend| (nonzero)
_FMA_X_HI = 2.0 ** 350
_FMA_T_LO = 2.0 ** -150   # nonzero template fluxes (checked once per model)
_FMA_T_HI = 2.0 ** 150


@intrinsic
def _fma(typingctx, a, b, c):
    """llvm.fma.f64: a*b + c with one rounding (vectorises to vfmadd)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        d = ir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.fma", [d], ir.FunctionType(d, [d, d, d]))
        return builder.call(fn, args)

    return sig, codegen


@njit(cache=_CACHE, nogil=True, error_model="numpy", inline="always")
def _recip2(b):
    """(yh, yl): yh = RN(1/b), yl = RN((1 - b*yh) * yh); yh + yl ~ 1/b to 2**-105."""
    yh = 1.0 / b
    return yh, _fma(-yh, b, 1.0) * yh


@njit(cache=_CACHE, nogil=True, error_model="numpy", inline="always")
def _fma_div(x, b, yh, yl):
    """RN(x / b) given (yh, yl) = _recip2(b) (see above for the conditions)."""
    q = _fma(x, yh, x * yl)
    r = _fma(-q, b, x)
    return _fma(r, yh, q)


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def fma_divide(x, b, out):
    """out[i] = x[i] / b[i] by ``_fma_div`` (``_recip2`` per element), for the tests."""
    for i in range(x.shape[0]):
        yh, yl = _recip2(b[i])
        out[i] = _fma_div(x[i], b[i], yh, yl)


@njit(cache=_CACHE, nogil=True, error_model="numpy", inline="always")
def _div_row(x, s, n, fma):
    """x[:n] /= s with IEEE quotients: with ``fma``, ``_fma_div`` when s is in
    [2**-200, 2**200] and every nonzero |x| in [2**-350, 2**350]; else the divider."""
    if fma and _FMA_LO <= s <= _FMA_HI:
        ok = True
        for z in range(n):
            a = abs(x[z])
            ok &= (a == 0.0) | ((a >= _FMA_X_LO) & (a <= _FMA_X_HI))
        if ok:
            yh, yl = _recip2(s)
            for z in range(n):
                x[z] = _fma_div(x[z], s, yh, yl)
            return
    for z in range(n):
        x[z] = x[z] / s


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _fma_div_ok(fj, e2):
    """True if (fj * template) / e2 and template**2 / e2 may use ``_fma_div``."""
    a = abs(fj)
    return (_FMA_LO <= e2 <= _FMA_HI) and (fj == 0.0 or (_FMA_LO <= a <= _FMA_HI))


def templates_fma_ok(fT: np.ndarray) -> bool:
    """True if every template flux is 0 or within [2**-150, 2**150] (finite)."""
    a = np.abs(fT)
    nz = a[a != 0]
    return bool(np.all(np.isfinite(a)) and (nz.size == 0 or
                (nz.min() >= _FMA_T_LO and nz.max() <= _FMA_T_HI)))


#: ``_stage_a`` division modes
DIV_HW, DIV_FMA, DIV_INEXACT = 0, 1, 2


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _stage_a(fT, f2T, f, ef2, nonobs, foo, chi_clip, out, mode=DIV_HW):
    """out[b, k] = -0.5 * clip(chi2[b, k] - min_k chi2[b, k], 0, chi_clip).

    chi2 as desc_bpz p_c_z_t: fot = sum_f (f*ft)/ef**2 and ftt = sum_f
    ft**2/ef**2 over bands with ef <= 1 (in band order), chi2 = foo -
    fot**2/(ftt + 1e-300) (foo where ftt == 0). fT, f2T: template fluxes and
    their squares as (nf, nk); k runs over (template, z), any order (only the
    minimum value of chi2 is used across k).

    ``mode``: DIV_HW divides (``/``) as RAIL; DIV_FMA gives the same quotients bit for bit
    with ``_fma_div`` (the caller has checked the templates with ``templates_fma_ok``;
    object bands outside ``_fma_div_ok`` divide); DIV_INEXACT multiplies by 1/ef**2 (not
    RAIL's numbers).
    """
    nb = out.shape[0]
    nf, nk = fT.shape
    fot = np.empty(_KT)
    ftt = np.empty(_KT)
    obs = np.empty(nf, np.int64)
    for b in range(nb):
        nobs = 0
        for j in range(nf):
            if not nonobs[b, j]:
                obs[nobs] = j
                nobs += 1
        fo = foo[b]
        row = out[b]
        for k0 in range(0, nk, _KT):
            m = min(_KT, nk - k0)
            for k in range(m):
                fot[k] = 0.0
                ftt[k] = 0.0
            for jj in range(nobs):
                j = obs[jj]
                fj = f[b, j]
                e2 = ef2[b, j]
                r1 = fT[j, k0:k0 + m]
                r2 = f2T[j, k0:k0 + m]
                if mode == DIV_FMA and _fma_div_ok(fj, e2):
                    yh, yl = _recip2(e2)
                    for k in range(m):
                        fot[k] = fot[k] + _fma_div(fj * r1[k], e2, yh, yl)
                        ftt[k] = ftt[k] + _fma_div(r2[k], e2, yh, yl)
                elif mode != DIV_INEXACT:
                    for k in range(m):
                        fot[k] = fot[k] + (fj * r1[k]) / e2
                        ftt[k] = ftt[k] + r2[k] / e2
                else:
                    # x * (1/e2) instead of x / e2: twice as fast, differs from
                    # RAIL in the last bit of each term
                    w = fj / e2
                    v = 1.0 / e2
                    for k in range(m):
                        fot[k] = fot[k] + w * r1[k]
                        ftt[k] = ftt[k] + r2[k] * v
            rr = row[k0:k0 + m]
            for k in range(m):
                t = ftt[k]
                c = fo - (fot[k] * fot[k]) / (t + 1e-300)
                rr[k] = fo if t == 0.0 else c
        # min (np.argmin semantics: a NaN anywhere makes min_chi2 NaN)
        c0 = np.inf
        c1 = np.inf
        c2 = np.inf
        c3 = np.inf
        nan = False
        k = 0
        while k + 4 <= nk:
            a0 = row[k]
            a1 = row[k + 1]
            a2 = row[k + 2]
            a3 = row[k + 3]
            c0 = a0 if a0 < c0 else c0
            c1 = a1 if a1 < c1 else c1
            c2 = a2 if a2 < c2 else c2
            c3 = a3 if a3 < c3 else c3
            nan |= (a0 != a0) | (a1 != a1) | (a2 != a2) | (a3 != a3)
            k += 4
        while k < nk:
            a0 = row[k]
            c0 = a0 if a0 < c0 else c0
            nan |= a0 != a0
            k += 1
        c0 = c1 if c1 < c0 else c0
        c2 = c3 if c3 < c2 else c2
        cmin = c2 if c2 < c0 else c0
        if nan:
            cmin = np.nan
        for k in range(nk):
            d = row[k] - cmin
            d = 0.0 if d < 0.0 else d
            d = chi_clip if d > chi_clip else d
            row[k] = -0.5 * d


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _prior_arg(zt_at_a, zmt_at_a, out, fma=False):
    """out[b, ty, z] = -1. * clip(z**a / zm**a, 0, 700) (prior_function).

    ``fma``: the caller checked that every z**a is 0 or within [2**-350, 2**350]; the
    quotients then use ``_fma_div`` when zm**a is within [2**-200, 2**200] (same bits)."""
    nb = out.shape[0]
    ntype, nz = zt_at_a.shape
    for b in range(nb):
        for ty in range(ntype):
            zm = zmt_at_a[b, ty]
            src = zt_at_a[ty]
            dst = out[b, ty]
            if fma and _FMA_LO <= zm <= _FMA_HI:
                yh, yl = _recip2(zm)
                for z in range(nz):
                    v = _fma_div(src[z], zm, yh, yl)
                    v = 0.0 if v < 0.0 else v
                    v = 700.0 if v > 700.0 else v
                    dst[z] = -1.0 * v
            else:
                for z in range(nz):
                    v = src[z] / zm
                    v = 0.0 if v < 0.0 else v
                    v = 700.0 if v > 700.0 else v
                    dst[z] = -1.0 * v


@njit(cache=_CACHE, nogil=True, error_model="numpy")
def _stage_c(L, E, zt_at_a, ttype, f_t, zgrid, hdx, p_min, thr, kernel,
             no_prior, pdf, zmode_idx, tb, todds, zmean, fma=True):
    """Prior, posterior, marginalisation, mode, cut, normalisation, tb, todds.

    L: (nb, nt, nz) likelihood; E: (nb, ntype, nz) = exp(-clip(z^a/zm^a, 0,
    700)); zt_at_a: (ntype, nz); hdx = 0.5 * diff(zgrid). Writes zmode_idx,
    tb, todds, zmean and pdf[b]: BPZ's sum-to-one p(z) normalised twice with
    qp.interp's trapezoid rule, as the ensemble RAIL returns (qp 1.1.4 builds
    the interp object twice, each time dividing by the integral).
    ``fma``: the divisions of a row by its sum use ``_fma_div`` (``_div_row``; the
    same IEEE quotients); False: the hardware division.
    """
    nb = L.shape[0]
    nz = zgrid.shape[0]
    nt = ttype.shape[0]
    ntype = zt_at_a.shape[0]
    p = np.empty((ntype, nz))
    post = np.empty((nt, nz))
    postz = np.empty(nz)
    tmp = np.empty(nz)
    col = np.empty(nt)
    n1 = np.empty(ntype)
    tmarg = np.empty(nt)
    nk = kernel.shape[0]
    conv = np.empty(nz)
    nn8 = nt - (nt % 8)
    thr_fma = fma and thr > 2.0 ** -140
    for b in range(nb):
        Lb = L[b]
        if no_prior:
            for t in range(nt):
                for z in range(nz):
                    post[t, z] = Lb[t, z] * 1.0
        else:
            # ---- prior (prior_from_dict.prior_function), one row per type --
            Eb = E[b]
            for ty in range(ntype):
                for z in range(nz):
                    p[ty, z] = zt_at_a[ty, z] * Eb[ty, z]
            _seq_sum_rows(p, ntype, nz, n1)
            for ty in range(ntype):
                s = n1[ty]
                pr = p[ty]
                if thr_fma and _FMA_LO <= s <= _FMA_HI:
                    # IEEE quotients where |p| >= 2**-350 (``_fma_div``); below, the exact
                    # quotient and this one are both < 2**-149 < thr: 0 either way
                    yh, yl = _recip2(s)
                    for z in range(nz):
                        q = _fma_div(pr[z], s, yh, yl)
                        pr[z] = 0.0 if q < thr else q
                else:
                    for z in range(nz):
                        q = pr[z] / s
                        pr[z] = 0.0 if q < thr else q
            _seq_sum_rows(p, ntype, nz, n1)
            for ty in range(ntype):
                _div_row(p[ty], n1[ty], nz, fma)
            # ---- posterior L * (prior * f_t) -------------------------------
            for t in range(nt):
                ty = ttype[t]
                c = f_t[b, t]
                for z in range(nz):
                    post[t, z] = Lb[t, z] * (p[ty, z] * c)
        # ---- p(z) = post.sum(axis=1): numpy pairwise order over templates ---
        if nt == 8:
            for z in range(nz):
                postz[z] = (((post[0, z] + post[1, z]) + (post[2, z] + post[3, z]))
                            + ((post[4, z] + post[5, z]) + (post[6, z] + post[7, z])))
        elif nt < 8:
            for z in range(nz):
                postz[z] = 0.0
            for t in range(nt):
                for z in range(nz):
                    postz[z] = postz[z] + post[t, z]
        else:
            for z in range(nz):
                for t in range(nt):
                    col[t] = post[t, z]
                postz[z] = _pairwise_sum(col, 0, nt)
        if nk > 0:
            # np.convolve(postz, kernel, mode='same')
            off = (nk - 1) // 2
            for i in range(nz):
                kk = i + off
                s = 0.0
                for j in range(nk):
                    m = kk - j
                    if 0 <= m < nz:
                        s += postz[m] * kernel[j]
                conv[i] = s
            for i in range(nz):
                postz[i] = conv[i]
        # ---- mode: np.argmax (first max; first NaN wins) ---------------------
        zpos = 0
        pmax = postz[0]
        if pmax == pmax:
            for z in range(1, nz):
                v = postz[z]
                if v > pmax:
                    pmax = v
                    zpos = z
                elif v != v:
                    pmax = v
                    zpos = z
                    break
        zmode_idx[b] = zpos
        cut = pmax * p_min
        for z in range(nz):
            v = postz[z]
            postz[z] = 0.0 if v < cut else v
        s = _pairwise_sum(postz, 0, nz)
        if not (abs(s) <= 1e-8):  # RAIL: if not np.isclose(sum, 0.0)
            _div_row(postz, s, nz, fma)
        # ---- best template at the mode, todds --------------------------------
        best = 0
        bv = post[0, zpos]
        if bv == bv:
            for t in range(1, nt):
                v = post[t, zpos]
                if v > bv:
                    bv = v
                    best = t
                elif v != v:
                    best = t
                    break
        tb[b] = best
        _seq_sum_rows(post, nt, nz, tmarg)
        todds[b] = tmarg[best] / _pairwise_sum(tmarg, 0, nt)
        # ---- zmean (RAIL: (zgrid * pdf).sum() / pdf.sum()) -------------------
        for z in range(nz):
            tmp[z] = zgrid[z] * postz[z]
        zmean[b] = _pairwise_sum(tmp, 0, nz) / _pairwise_sum(postz, 0, nz)
        # ---- qp.interp normalisation (cumsum of hdx*(y[i+1]+y[i])), twice ---
        pb = pdf[b]
        for _ in range(2):
            s = 0.0
            for z in range(nz - 1):
                s += hdx[z] * (postz[z + 1] + postz[z])
            _div_row(postz, s, nz, fma)
        for z in range(nz):
            pb[z] = postz[z]


# --------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------

class FastBPZ:
    """BPZ with RAIL's BPZliteEstimator numbers, vectorised.

    Parameters
    ----------
    model : dict
        The model BPZliteInformer produces (``{"priormodel": {...},
        "zp_offsets": {"offsets": ...}}``), e.g. ``pickle.load`` of its file.
    config : dict
        BPZliteEstimator config keys (see ``DEFAULTS``; missing keys take RAIL's
        defaults). Extra keys: ``block_size`` (objects per kernel call),
        ``n_threads`` (threads over object ranges, default 1), ``exact`` (default True:
        divide exactly as RAIL; False: multiply by reciprocals, faster, not RAIL's
        numbers) and ``fma_division`` (default True: with ``exact``, RAIL's quotients
        computed with FMAs, bit-identical; False: the hardware division).
    """

    def __init__(self, model: Mapping[str, Any], config: Mapping[str, Any] | None = None):
        cfg = _rail_defaults()
        cfg.update(dict(config or {}))
        self.config = cfg
        if len(cfg["bands"]) != len(cfg["err_bands"]) or len(cfg["bands"]) != len(cfg["filter_list"]):
            raise ValueError("bands, err_bands and filter_list must have the same length")
        if cfg["ref_band"] not in cfg["bands"]:
            raise ValueError(f"ref_band {cfg['ref_band']} not in bands {cfg['bands']}")
        self.modeldict = dict(model["priormodel"])
        self.zp_off_from_file = np.asarray(model["zp_offsets"]["offsets"])

        data_path = cfg["bpz_ref_data_path"]
        if data_path is None or data_path == "None":
            data_path = _default_data_path()
        if not os.path.exists(data_path):
            raise FileNotFoundError(f"bpz_ref_data_path {data_path} does not exist")
        self.data_path = data_path

        self.zgrid = np.linspace(cfg["zmin"], cfg["zmax"], cfg["nzbins"])
        ft = load_flux_templates(data_path, cfg["spectra_file"], cfg["filter_list"],
                                 self.zgrid, cfg["madau_flag"])
        self.flux_templates = ft
        nz, nt, nf = ft.shape
        self.nt = nt
        # (nf, nt*nz) layouts (k = t*nz + z) for the inner loops
        self._fT = np.ascontiguousarray(ft.transpose(2, 1, 0).reshape(nf, nt * nz))
        self._f2T = np.ascontiguousarray((ft ** 2).transpose(2, 1, 0).reshape(nf, nt * nz))
        self._fma_rows = bool(cfg.get("fma_division", True))
        if not bool(cfg.get("exact", True)):
            self._div_mode = DIV_INEXACT
        elif bool(cfg.get("fma_division", True)) and templates_fma_ok(self._fT):
            self._div_mode = DIV_FMA
        else:
            self._div_mode = DIV_HW

        from desc_bpz.bpz_tools_py3 import eeps

        self._chi_clip = float(-2 * eeps)

        # ---- prior constants (prior_from_dict.prior_function) -----------------
        md = self.modeldict
        numpertype = list(md["nt_array"])
        if int(np.sum(numpertype)) != nt:
            raise ValueError(f"nt_array {numpertype} does not sum to the {nt} templates")
        self._numpertype = numpertype
        a = np.repeat(md["a_arr"], numpertype)
        # one column per broad type: templates of one type share a, zo, km
        first = np.cumsum([0] + numpertype[:-1])
        self._ttype = np.repeat(np.arange(len(numpertype)), numpertype).astype(np.int64)
        zt_at_a = np.power.outer(self.zgrid, a)  # exactly RAIL's call
        self._zt_at_a = np.ascontiguousarray(zt_at_a[:, first].T)  # (ntype, nz)
        self._a_ty = a[first]
        self._zo_ty = np.repeat(md["zo_arr"], numpertype)[first]
        self._km_ty = np.repeat(md["km_arr"], numpertype)[first]
        self._thr = 1e-2 / float(nz)
        zt = np.abs(self._zt_at_a)
        self._fma_prior = self._fma_rows and bool(
            np.all(np.isfinite(zt)) and np.all((zt == 0) | ((zt >= _FMA_X_LO) & (zt <= _FMA_X_HI))))
        self._hdx = (self.zgrid[1:] - self.zgrid[:-1]) * 0.5

        if cfg["gauss_kernel"] > 0:
            dz = cfg["dz"]
            gk = cfg["gauss_kernel"]
            x = np.arange(-3.0 * gk, 3.0 * gk + dz / 10.0, dz)
            self._kernel = np.exp(-((x / gk) ** 2))
        else:
            self._kernel = np.zeros(0)

    # ------------------------------------------------------------------
    def _preprocess_magnitudes(self, data):
        """RAIL's BPZliteEstimator._preprocess_magnitudes (same code, same dtypes).

        ``data`` is modified: pass copies."""
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._preprocess_magnitudes_impl(data)

    def _preprocess_magnitudes_impl(self, data):
        from desc_bpz.bpz_tools_py3 import e_mag2frac

        cfg = self.config
        bands = cfg["bands"]
        errs = cfg["err_bands"]
        zp_frac = e_mag2frac(np.array(cfg["zp_errors"]))
        for ii, (bandname, errname) in enumerate(zip(bands, errs)):
            if np.isnan(cfg["nondetect_val"]):
                detmask = np.isnan(data[bandname])
            else:
                detmask = np.isclose(data[bandname], cfg["nondetect_val"])
            if cfg["override_file_offsets"]:
                zpoff = np.array(cfg["zp_offsets"])
            else:
                zpoff = self.zp_off_from_file
            data[bandname] -= zpoff[ii]
            data[bandname][detmask] = 99.0
            data[errname][detmask] = cfg["mag_limits"][bandname]
        for bandname, errname in zip(bands, errs):
            if np.isnan(cfg["unobserved_val"]):
                obsmask = np.isnan(data[bandname])
            else:
                obsmask = np.isclose(data[bandname], cfg["unobserved_val"])
            data[bandname][obsmask] = -99.0
            data[errname][obsmask] = 20.0
        mag_errs = np.array([data[er] for er in errs]).T
        mags = np.array([data[b] for b in bands]).T
        np.clip(mag_errs, cfg["mag_err_min"], 20, mag_errs)
        flux = 10.0 ** (-0.4 * mags)
        flux_err = flux * (10.0 ** (0.4 * mag_errs) - 1.0)
        seen1 = (flux > 0) & (flux_err > 0)
        seen = np.where(seen1)
        nondetect = 99.0
        nondetflux = 10.0 ** (-0.4 * nondetect)
        unseen = np.isclose(flux, nondetflux, atol=nondetflux * 0.5)
        flux[unseen] = 0.0
        flux_err[unseen] = 10.0 ** (-0.4 * np.abs(mag_errs[unseen]))
        add_err = np.zeros_like(flux_err)
        add_err[seen] = ((zp_frac * flux) ** 2)[seen]
        add_err[unseen] = ((zp_frac * 0.5 * flux_err) ** 2)[unseen]
        flux_err = np.sqrt(flux_err ** 2 + add_err)
        nonobserved = -99.0
        unobserved = np.isclose(mags, nonobserved)
        flux[unobserved] = 0.0
        flux_err[unobserved] = 1e28
        m_0_col = bands.index(cfg["ref_band"])
        return flux, flux_err, mags[:, m_0_col]

    def _object_terms(self, flux, flux_err, mag0):
        """Per-object quantities RAIL computes with numpy before the big arrays."""
        f, ef = flux, flux_err
        # p_c_z_t: foo = add.reduce(where(less(f/ef, 1e-4), 0., (f/ef)**2)) -- in
        # the input dtype (float32 for the DC2 files), summed band by band
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            r = f / ef
            terms = np.where(np.less(r, 1e-4), 0.0, r ** 2)
        foo = np.zeros(len(f), dtype=terms.dtype)
        for j in range(terms.shape[1]):
            foo = foo + terms[:, j]
        nonobs = np.greater(ef + 0.0, 1.0)
        with np.errstate(over="ignore"):
            ef2 = ef ** 2  # input dtype, as reshape(ef, ...)**2 (inf for ef=1e28 in float32)

        # prior_function: m clipped to [m0, 32]; dm = m - m0 in m's dtype
        md = self.modeldict
        m0 = md["mo"]
        mags = np.asarray(mag0)
        # RAIL: `if m > 32.: m = 32.`, `if m < m0: m = m0`, dm = m - m0 with m a
        # numpy scalar of the input dtype (float32 for DC2) and m0 a Python float:
        # array ops on the same dtypes give the same (NEP 50) results.
        with np.errstate(invalid="ignore"):
            hi = mags > 32.0
            lo = ~hi & (mags < m0)
            dm = np.asarray(mags - m0, dtype=np.float64)
        dm[hi] = 32.0 - m0
        dm[lo] = m0 - m0
        numpertype = self._numpertype
        fo_arr = np.asarray(md["fo_arr"])
        kt_arr = np.asarray(md["kt_arr"])
        nt = self.nt
        if len(numpertype) == 1:
            k_t = np.repeat(kt_arr, numpertype)
            fo_t = np.repeat(fo_arr / numpertype[0], numpertype)
            f_t = fo_t[None, :] * np.exp(-k_t[None, :] * dm[:, None])
        else:
            k_t = np.repeat(kt_arr, numpertype[:-1])
            fo_t = np.repeat(fo_arr / numpertype[:-1], numpertype[:-1])
            n_most = int(np.sum(numpertype[:-1]))
            f_t = np.zeros((len(dm), nt))
            f_t[:, :n_most] = fo_t[None, :] * np.exp(-k_t[None, :] * dm[:, None])
            acc = np.zeros(len(dm))
            for j in range(n_most):  # np.add.reduce of n_most (<8) values
                acc = acc + f_t[:, j]
            f_t[:, n_most:] = ((1.0 - acc) / float(numpertype[-1]))[:, None]
        # zmt ** a per broad type
        zmt = np.clip(self._zo_ty[None, :] + self._km_ty[None, :] * dm[:, None], 0.01, 15.0)
        # both operands contiguous and of one shape, so numpy takes the same
        # (SIMD) power loop as RAIL's 1-d call
        a_full = np.ascontiguousarray(np.broadcast_to(self._a_ty, zmt.shape))
        zmt_at_a = np.power(zmt, a_full)
        return (np.ascontiguousarray(foo, dtype=np.float64),
                np.ascontiguousarray(nonobs),
                np.ascontiguousarray(ef2, dtype=np.float64),
                np.ascontiguousarray(f_t), np.ascontiguousarray(zmt_at_a))

    def _run_range(self, lo0, hi0, f64, ef2, nonobs, foo, f_t, zmt_at_a,
                   pdf, zidx, tb, todds, zmean):
        """Objects lo0..hi0 in blocks: chi^2 -> exp -> prior -> exp -> posterior."""
        cfg = self.config
        nz = len(self.zgrid)
        nt = self.nt
        bs = max(1, int(cfg.get("block_size", 64)))
        no_prior = bool(cfg["no_prior"])
        m = max(1, min(bs, hi0 - lo0))
        Lbuf = np.empty((m, nt, nz))
        Ebuf = np.empty((m, self._zt_at_a.shape[0], nz))
        for lo in range(lo0, hi0, bs):
            hi = min(hi0, lo + bs)
            L = Lbuf[: hi - lo]
            E = Ebuf[: hi - lo]
            _stage_a(self._fT, self._f2T, f64[lo:hi], ef2[lo:hi], nonobs[lo:hi],
                     foo[lo:hi], self._chi_clip, L.reshape(hi - lo, nt * nz), self._div_mode)
            with np.errstate(all="ignore"):
                np.exp(L, out=L)  # numpy's exp, as p_c_z_t
                if not no_prior:
                    _prior_arg(self._zt_at_a, zmt_at_a[lo:hi], E, self._fma_prior)
                    np.exp(E, out=E)  # numpy's exp, as prior_function
            _stage_c(L, E, self._zt_at_a, self._ttype, f_t[lo:hi], self.zgrid, self._hdx,
                     float(cfg["p_min"]), self._thr, self._kernel, no_prior,
                     pdf[lo:hi], zidx[lo:hi], tb[lo:hi], todds[lo:hi], zmean[lo:hi],
                     self._fma_rows)

    def estimate(self, data: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """BPZ PDFs for one table of objects.

        ``data``: mapping column -> 1-d array (dict, numpy structured array, or
        DataFrame) with the configured bands and err_bands. It is not modified.
        Returns ``(pdf (N, nzbins) float64, extras)``; extras: ``zmode``,
        ``zmean``, ``tb`` (float, as RAIL), ``todds``.
        """
        cfg = self.config
        cols = list(cfg["bands"]) + list(cfg["err_bands"])
        work = {c: np.array(np.asarray(data[c]), copy=True) for c in cols}
        flux, flux_err, mag0 = self._preprocess_magnitudes(work)
        n = flux.shape[0]
        f64 = np.ascontiguousarray(flux, dtype=np.float64)
        foo, nonobs, ef2, f_t, zmt_at_a = self._object_terms(flux, flux_err, mag0)

        pdf = np.empty((n, len(self.zgrid)))
        zidx = np.empty(n, np.int64)
        tb = np.empty(n, np.int64)
        todds = np.empty(n)
        zmean = np.empty(n)
        nthr = max(1, int(cfg.get("n_threads") or 0))    # RAIL-style stage option; unset: 1
        args = (f64, ef2, nonobs, foo, f_t, zmt_at_a, pdf, zidx, tb, todds, zmean)
        if nthr == 1 or n < 2 * nthr:
            self._run_range(0, n, *args)
        else:
            # the kernels release the GIL (numba nogil, numpy's exp on blocks)
            from concurrent.futures import ThreadPoolExecutor

            edges = np.linspace(0, n, nthr + 1).astype(int)
            with ThreadPoolExecutor(nthr) as pool:
                futs = [pool.submit(self._run_range, int(lo), int(hi), *args)
                        for lo, hi in zip(edges[:-1], edges[1:])]
                for f in futs:
                    f.result()

        extras = dict(
            zmode=self.zgrid[zidx],
            zmean=zmean,
            tb=tb.astype(np.float64),
            todds=todds,
        )
        return pdf, extras
