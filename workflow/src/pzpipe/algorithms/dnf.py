"""DNF (directional neighbourhood fitting): RAIL's ``DNFInformer`` / ``DNFEstimator``
(pz-rail-dnf).

Parameters the pipeline sets: none beyond the shared ones. ``algorithms.dnf.subchunk``
(config) is the number of rows of one internal RAIL call.

RAIL traps handled here:
  * RAIL's DNF (2.0.4) couples the objects of one call: it truncates every object's
    neighbour list at the largest number of inlier neighbours *in the call*
    (``cutNneighbors = np.max(nneighbors)``) before its fit, so an object's result
    depends on the other objects of the call (``chunk_coupled``: the pipeline never
    splits a chunk for DNF).
  * One call on a 130k-object chunk needs tens of GB (its preselection holds 4,000
    neighbours x bands per object; 6.8-7.0 GB at 20k objects). ``estimate_chunk`` runs
    the chunk in two passes over sub-chunks, through RAIL's own ``DNFEstimator``, equal
    to one RAIL call on the whole chunk (tests/test_estimate.py, the two-pass path;
    tests/test_algo_dnf_fast.py, the fast path).
  * With a pandas DataFrame under pandas 3, RAIL's DNF silently skips the non-detection
    replacement: the pipeline always passes a dict of numpy arrays.

Fast path: ``dnf_fast.FastDNF``, RAIL's preselection, metric, outlier rejection, fit and
PDFs vectorised over sub-chunks (numba kernels in sklearn's and numpy's operation order,
numpy's own argpartition/argsort/lstsq), with the chunk coupling kept (two passes); it
takes the whole chunk, in place of ``estimate_chunk``. Bit-identical to one RAIL
``DNFEstimator.estimate`` call on the chunk (tests/test_algo_dnf_fast.py, every PDF value
and ancil array of the 20,449-object DC2 sample, plus edge cases).

Extras (RAIL ancil -> column):
  * ``DNF_Z`` -> ``z_fit``: DNF's photo-z from its local linear fit of redshift against
    the magnitudes over the outlier-cleaned nearest neighbours (RAIL runs DNF with
    ``fit=True``); the PDF is the neighbours' weighted redshift histogram, so ``z_fit``
    differs from the PDF's mode/mean/median;
  * ``photozerr`` -> ``z_fit_err``: its uncertainty, sqrt(photozerr_param^2 +
    photozerr_fit^2) (propagated photometric errors and the fit's residual scatter).
"""

from __future__ import annotations

import contextlib

import numpy as np

from pzpipe.core.columns import ID_COL
from ._base import Algorithm, FastPath, patched, release_memory

FAST = FastPath(
    ref="pzpipe.algorithms.dnf_fast:FastDNF",
    kind="standalone",
    verified={"pz-rail-dnf": "2.0.4", "scikit-learn": "1.9.1", "numpy": "2.4.6",
              "scipy": "1.17.1", "qp-prob": "1.1.4", "pz-rail-base": "2.0.11",
              "numba": "0.68.1", "llvmlite": "0.50.0"},
    guarantee=("bit-identical to one RAIL DNFEstimator call on the whole chunk: every PDF "
               "value and ancil array (DNF_Z, photozerr, ...) of the DC2 validation sample "
               "(tests/test_algo_dnf_fast.py runs RAIL itself)"),
)


def estimate_chunk(runner, inp):
    """DNF in sub-chunks of ``algorithms.dnf.subchunk`` rows, equal to one RAIL call on the
    whole chunk.

    Two passes over the sub-chunks, both through RAIL's own ``DNFEstimator``:

    1. RAIL's preselection and metric (~90% of DNF's time) run once per sub-chunk;
       the 80 nearest neighbours and the sub-chunk's natural truncation are kept
       (~1.6 kB/object) and the fit is skipped;
    2. each sub-chunk is estimated again from the kept neighbours, with the
       truncation forced to the chunk's maximum, so RAIL's outlier rejection, fit and
       PDFs see exactly what one call on the whole chunk would.

    The results equal RAIL's on the whole chunk with the memory of one sub-chunk and about
    the time of one RAIL call.
    """
    n = len(inp[ID_COL])
    step = max(1, int(runner.cfg["algorithms"]["dnf"]["subchunk"]))
    bounds = [(s, min(n, s + step)) for s in range(0, n, step)]
    kept = []
    for s, e in bounds:
        with _neighbours() as rec:
            runner.rail_call({k: v[s:e].copy() for k, v in inp.items()})
        kept.append(rec)
        release_memory()   # RAIL's DNF leaves large temporaries: keep the RSS flat
    top = max(r["natural"] for r in kept)
    wanted = runner.algo.extras
    outs = []
    for (s, e), rec in zip(bounds, kept):
        with _replay(rec, top):
            pdf_s, anc_s = runner.rail_call({k: v[s:e].copy() for k, v in inp.items()})
        outs.append((pdf_s, {k: np.asarray(anc_s[k]) for k in wanted if k in anc_s}))
    pdf = np.concatenate([o[0] for o in outs])
    keys = set.intersection(*(set(o[1]) for o in outs))
    anc = {k: np.concatenate([np.asarray(o[1][k]).reshape(e - s, -1).squeeze(-1)
                              if np.asarray(o[1][k]).ndim > 1 else np.asarray(o[1][k])
                              for o, (s, e) in zip(outs, bounds)]) for k in keys}
    return pdf, anc


@contextlib.contextmanager
def _neighbours():
    """Pass 1: run RAIL's preselection and metric, keep their results and the call's
    natural neighbour truncation, skip the fit (its output is discarded)."""
    import rail.estimation.algos.dnf as dnf_mod

    rec = {}
    orig = {k: getattr(dnf_mod, k) for k in
            ("preselection", "metric_computation", "compute_photoz_mean_routliers")}

    def preselection(*a, **k):
        res = orig["preselection"](*a, **k)
        # de1 is a view of the (n, 4000) preselection distances: keep a copy only
        rec["de1"], rec["Nvalid"] = np.array(res[3], copy=True), res[4]
        return res

    def metric_computation(*a, **k):
        res = orig["metric_computation"](*a, **k)
        rec["metric"] = tuple(np.array(x, copy=True) for x in res)   # (n, 80) neighbours
        return res

    def compute_photoz_mean_routliers(NEIGHBORS, Verr, pdf, Nvalid, zgrid):
        res = orig["compute_photoz_mean_routliers"](NEIGHBORS, Verr, pdf, Nvalid, zgrid)
        rec["natural"] = int(np.max(res[4])) if len(res[4]) else 0
        return res

    def compute_photoz_fit(NEIGHBORS, V, Verr, T, z, fit, photoz, photozerr, photozerr_param,
                           photozerr_fit, pdf, zgrid):
        n = len(photoz)
        return (photoz, photozerr, photozerr_param, photozerr_fit, np.zeros(n), 0,
                np.ones((n, len(zgrid))))

    with patched(dnf_mod, preselection=preselection, metric_computation=metric_computation,
                 compute_photoz_mean_routliers=compute_photoz_mean_routliers,
                 compute_photoz_fit=compute_photoz_fit):
        yield rec


@contextlib.contextmanager
def _replay(rec: dict, forced: int):
    """Pass 2: RAIL's estimator on the neighbours kept by pass 1, with the neighbour
    truncation forced to ``forced`` (the chunk's maximum)."""
    import rail.estimation.algos.dnf as dnf_mod

    orig = dnf_mod.compute_photoz_mean_routliers

    def preselection(V, *a, **k):
        if V.shape[0] != rec["Nvalid"]:
            raise RuntimeError("DNF replay: sub-chunk does not match its kept neighbours")
        return None, None, None, rec["de1"], rec["Nvalid"]

    def metric_computation(*a, **k):
        return rec["metric"]

    def compute_photoz_mean_routliers(NEIGHBORS, Verr, pdf, Nvalid, zgrid):
        res = orig(NEIGHBORS, Verr, pdf, Nvalid, zgrid)
        natural = int(np.max(res[4])) if len(res[4]) else 0
        if forced > natural:
            res = (*res[:6], NEIGHBORS[:, :forced])
        return res

    with patched(dnf_mod, preselection=preselection, metric_computation=metric_computation,
                 compute_photoz_mean_routliers=compute_photoz_mean_routliers):
        yield


ALGORITHM = Algorithm(
    name="dnf",
    title="DNF (directional neighbourhood fitting, RAIL DNF)",
    module="rail.estimation.algos.dnf",
    informer="DNFInformer",
    estimator="DNFEstimator",
    distribution="pz-rail-dnf",
    extras={"DNF_Z": "z_fit", "photozerr": "z_fit_err"},
    extra_meta={
        "z_fit": {"description": "DNF: photo-z from a local linear fit of redshift against "
                                 "magnitudes over the outlier-cleaned nearest neighbours "
                                 "(RAIL ancil DNF_Z)", "unit": ""},
        "z_fit_err": {"description": "DNF: uncertainty of z_fit, sqrt(photozerr_param^2 + "
                                     "photozerr_fit^2) (RAIL ancil photozerr)", "unit": ""},
    },
    chunk_coupled=True,
    estimate_chunk=estimate_chunk,
    fast=FAST,
    settings={"subchunk": {
        "type": "integer", "minimum": 1, "default": 1000,
        "description": "rows per sub-chunk of RAIL's two-pass path (fast: false): bounds "
                       "DNF's memory; results do not depend on it (the fast path ignores it)"}},
    bench={"rows": 8000},
)
