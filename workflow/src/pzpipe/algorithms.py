"""Registry of photo-z algorithms: one entry per RAIL algorithm.

Adding an algorithm means adding one ``Algorithm`` entry here (and its config block);
no stage module has an if/elif on algorithm names. Each entry knows its RAIL informer
and estimator classes, the RAIL parameters the pipeline always sets, which ancillary
outputs to keep, and any work-arounds for RAIL traps (see ../shared/NOTES.md):

- RAIL estimators overwrite non-detections in the caller's arrays: we pass copies.
- DNF needs a dict of numpy arrays (not a DataFrame) and small internal chunks to bound
  memory: its RAIL ``chunk_size`` is ``estimate.dnf_subchunk``.
- TPZ is not seeded inside RAIL (numpy global rng and stdlib ``random``): we seed both
  before every inform/estimate call from the config seed and the chunk index.
- BPZ needs a writable copy of its template data (``bpz_ref_data_path``).
"""

from __future__ import annotations

import contextlib
import importlib
import random
from dataclasses import dataclass, field

import numpy as np

from .partition import ID_COL, err_col, mag_col


@dataclass(frozen=True)
class Algorithm:
    name: str
    module: str
    informer: str
    estimator: str
    extras: dict = field(default_factory=dict)    # ancil key -> output column
    seed_global_rng: bool = False                 # TPZ: seed numpy + random per call
    subchunk_key: str | None = None               # estimate.<key>: internal sub-chunk rows
    needs_bpz_data: bool = False
    chunk_coupled: bool = False                   # results depend on the whole chunk (DNF)
    # pzpipe's faster, bit-identical code for RAIL's estimator, used when
    # algorithms.<name>.fast (default true): a subclass of the RAIL estimator
    # ("module:Class") and/or a context manager around RAIL's estimate ("module:function")
    fast_estimator: str | None = None
    fast_context: str | None = None

    def classes(self):
        mod = importlib.import_module(self.module)
        return getattr(mod, self.informer), getattr(mod, self.estimator)


def _load(ref: str):
    """'module:name' -> the object."""
    mod, name = ref.split(":")
    return getattr(importlib.import_module(mod), name)


REGISTRY: dict[str, Algorithm] = {
    a.name: a
    for a in [
        Algorithm("bpz", "rail.estimation.algos.bpz_lite", "BPZliteInformer",
                  "BPZliteEstimator", extras={"todds": "todds", "tb": "t_best"},
                  needs_bpz_data=True),
        Algorithm("fzboost", "rail.estimation.algos.flexzboost", "FlexZBoostInformer",
                  "FlexZBoostEstimator", fast_context="pzpipe.fzbfast:patched"),
        Algorithm("knn", "rail.estimation.algos.k_nearneigh", "KNearNeighInformer",
                  "KNearNeighEstimator"),
        Algorithm("tpz", "rail.estimation.algos.tpz_lite", "TPZliteInformer",
                  "TPZliteEstimator", seed_global_rng=True,
                  fast_estimator="pzpipe.tpzfast:TPZfastEstimator"),
        Algorithm("dnf", "rail.estimation.algos.dnf", "DNFInformer", "DNFEstimator",
                  extras={"DNF_Z": "dnf_z", "photozerr": "dnf_zerr"},
                  subchunk_key="dnf_subchunk", chunk_coupled=True),
    ]
}


def get(name: str) -> Algorithm:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown algorithm '{name}'; known: {sorted(REGISTRY)}") from None


def common_params(cfg: dict) -> dict:
    """RAIL parameters shared by every algorithm, from the pipeline config."""
    bands = cfg["bands"]
    z = cfg["zgrid"]
    return dict(
        bands=[mag_col(b) for b in bands],
        err_bands=[err_col(b) for b in bands],
        ref_band=mag_col(cfg["ref_band"]),
        nondetect_val=float(cfg["partition"]["nondetect_val"]),
        zmin=float(z["zmin"]), zmax=float(z["zmax"]), nzbins=int(z["nz"]),
        hdf5_groupname="", id_col=ID_COL, redshift_col="redshift",
    )


def bpz_data_dir(results_dir: str = "results") -> str:
    import os

    return os.path.abspath(f"{results_dir}/bpz_data")


def stage_params(algo: Algorithm, cfg: dict, kind: str) -> dict:
    """Full RAIL parameter dict for ``kind`` in {'inform', 'estimate'}."""
    params = common_params(cfg)
    if algo.needs_bpz_data:
        params["bpz_ref_data_path"] = bpz_data_dir()
    if algo.name == "bpz" and kind == "estimate":
        # RAIL BPZ's grid is arange(zmin, zmax + dz, dz): make it the pipeline grid
        z = cfg["zgrid"]
        params["dz"] = (z["zmax"] - z["zmin"]) / (z["nz"] - 1)
    user = cfg["algorithms"][algo.name].get(kind, {}) or {}
    if user:
        inf_cls, est_cls = algo.classes()
        cls = inf_cls if kind == "inform" else est_cls
        unknown = [k for k in user if k not in cls.config_options]
        if unknown:
            import difflib

            from . import PipelineError

            close = difflib.get_close_matches(unknown[0], list(cls.config_options), n=3)
            raise PipelineError(
                f"config error at 'algorithms.{algo.name}.{kind}': '{unknown[0]}' is not a "
                f"parameter of RAIL's {cls.__name__}"
                + (f" (did you mean {', '.join(close)}?)" if close else "")
                + " - RAIL would silently ignore it. See the class's config_options.")
    params.update(user)
    return params


def seed_everything(seed: int) -> None:
    np.random.seed(seed % (2**32))
    random.seed(seed)


@contextlib.contextmanager
def seeded_default_rng(seed: int):
    """Make unseeded ``np.random.default_rng()`` calls deterministic while active.

    RAIL's TPZ (mlz_utils/data.py) creates ``np.random.default_rng()`` without a seed
    for its random realisations, so ``np.random.seed`` does not make it reproducible.
    Inside this context, every unseeded call gets the next child of
    ``SeedSequence(seed)``; calls with an explicit seed are unchanged.
    """
    orig = np.random.default_rng
    seq = np.random.SeedSequence(int(seed))

    def patched(seed=None, *args, **kwargs):
        if seed is None:
            seed = seq.spawn(1)[0]
        return orig(seed, *args, **kwargs)

    np.random.default_rng = patched
    try:
        yield
    finally:
        np.random.default_rng = orig


def chunk_seed(base: int, chunk_index: int) -> int:
    return (int(base) * 1_000_003 + int(chunk_index)) % (2**32)


class Runner:
    """Estimator for one algorithm with its model loaded once (one per worker)."""

    def __init__(self, algo: Algorithm, model_path: str, cfg: dict, name: str = "est"):
        from rail.core.data import DataStore

        DataStore.allow_overwrite = True
        self.algo = algo
        self.cfg = cfg
        self.zgrid = np.linspace(cfg["zgrid"]["zmin"], cfg["zgrid"]["zmax"], cfg["zgrid"]["nz"])
        _, est_cls = algo.classes()
        params = stage_params(algo, cfg, "estimate")
        # the pipeline computes its point estimates from the grid PDFs: skip RAIL's
        params.setdefault("calculated_point_estimates", [])
        self.fast = None
        if algo.name == "bpz" and cfg["algorithms"]["bpz"].get("fast", True):
            self.fast = _make_fast_bpz(model_path, params)
        self.stage = None
        use_fast = cfg["algorithms"][algo.name].get("fast", True)
        self.fast_context = _load(algo.fast_context) if use_fast and algo.fast_context else None
        if self.fast is None:
            if use_fast and algo.fast_estimator:
                est_cls = _load(algo.fast_estimator)
            self.stage = est_cls.make_stage(name=f"{name}_{algo.name}", model=model_path,
                                            output_mode="return", **params)
            stage = self.stage
            stage.open_model(**stage.config)           # load the model once
            stage.open_model = lambda *a, **k: stage.model

    def begin_chunk(self, chunk_index: int) -> None:
        """Seed the global random state for a chunk (TPZ: RAIL does not seed it)."""
        if self.algo.seed_global_rng:
            seed = chunk_seed(self.cfg["estimate"]["seed"], chunk_index)
            seed_everything(seed)

    def estimate(self, data: dict[str, np.ndarray], chunk_index: int = 0, seed: bool = True):
        """Return (pdf on the pipeline grid (N, nz) float64, extras dict of arrays).

        ``seed``: seed the random state for ``chunk_index`` first (callers that split a
        chunk into sub-chunks call ``begin_chunk`` once and pass ``seed=False``)."""
        n = len(data[ID_COL])
        if n == 0:
            return np.zeros((0, len(self.zgrid))), {v: np.zeros(0) for v in self.algo.extras.values()}
        inp = {k: np.array(v, copy=True) for k, v in data.items()}   # RAIL mutates inputs
        if seed:
            self.begin_chunk(chunk_index)
        if self.fast is not None:
            pdf, anc = self.fast.estimate(inp)
        elif self.algo.chunk_coupled:
            pdf, anc = self._estimate_dnf(inp, n)
        else:
            # one core per worker: FlexCode asks joblib for n_jobs=-1 (loky processes),
            # which oversubscribes the job's cores and can hang at worker exit
            import joblib

            with contextlib.ExitStack() as ctx:
                ctx.enter_context(joblib.parallel_config(backend="sequential"))
                if self.algo.seed_global_rng:
                    ctx.enter_context(seeded_default_rng(int(np.random.randint(0, 2**31 - 1))))
                if self.fast_context is not None:
                    ctx.enter_context(self.fast_context())
                ens = self.stage.estimate(inp).data
            pdf = np.asarray(ens.pdf(self.zgrid), dtype=np.float64).reshape(n, -1)
            anc = ens.ancil or {}
        extras = {}
        for key, col in self.algo.extras.items():
            if key in anc:
                extras[col] = np.asarray(anc[key]).reshape(n)
        return pdf, extras


    def _rail(self, inp):
        import joblib

        with joblib.parallel_config(backend="sequential"):
            ens = self.stage.estimate(inp).data
        n = len(inp[ID_COL])
        return np.asarray(ens.pdf(self.zgrid), dtype=np.float64).reshape(n, -1), (ens.ancil or {})

    def _estimate_dnf(self, inp, n):
        """DNF in sub-chunks of ``estimate.dnf_subchunk`` rows, equal to one RAIL call on the
        whole chunk.

        RAIL's DNF (2.0.4) truncates every object's neighbour list at the largest number of
        inlier neighbours *in the call* (``cutNneighbors = np.max(nneighbors)``) before
        its fit, so an object's result depends on the other objects of the call, and one
        call on a 130k-object chunk needs tens of GB (its preselection holds 4,000
        neighbours x bands per object). Two passes over the sub-chunks, both through
        RAIL's own ``DNFEstimator``:

        1. RAIL's preselection and metric (~90% of DNF's time) run once per sub-chunk;
           the 80 nearest neighbours and the sub-chunk's natural truncation are kept
           (~1.6 kB/object) and the fit is skipped;
        2. each sub-chunk is estimated again from the kept neighbours, with the
           truncation forced to the chunk's maximum, so RAIL's outlier rejection, fit and
           PDFs see exactly what one call on the whole chunk would.

        The results equal RAIL's on the whole chunk (tests/test_estimate.py) with the
        memory of one sub-chunk and about the time of one RAIL call.
        """
        step = max(1, int(self.cfg["estimate"][self.algo.subchunk_key]))
        bounds = [(s, min(n, s + step)) for s in range(0, n, step)]
        kept = []
        for s, e in bounds:
            with _dnf_neighbours() as rec:
                self._rail({k: v[s:e].copy() for k, v in inp.items()})
            kept.append(rec)
            _release_memory()
        top = max(r["natural"] for r in kept)
        outs = []
        for (s, e), rec in zip(bounds, kept):
            with _dnf_replay(rec, top):
                pdf_s, anc_s = self._rail({k: v[s:e].copy() for k, v in inp.items()})
            outs.append((pdf_s, {k: np.asarray(anc_s[k]) for k in self.algo.extras if k in anc_s}))
        pdf = np.concatenate([o[0] for o in outs])
        keys = set.intersection(*(set(o[1]) for o in outs))
        anc = {k: np.concatenate([np.asarray(o[1][k]).reshape(e - s, -1).squeeze(-1)
                                  if np.asarray(o[1][k]).ndim > 1 else np.asarray(o[1][k])
                                  for o, (s, e) in zip(outs, bounds)]) for k in keys
               if k in self.algo.extras}
        return pdf, anc


def _release_memory() -> None:
    """Collect garbage and return freed heap to the OS (RAIL's DNF leaves large
    temporaries per call; without this the worker's RSS creeps up over a chunk)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


@contextlib.contextmanager
def _patched(module, **funcs):
    orig = {k: getattr(module, k) for k in funcs}
    for k, f in funcs.items():
        setattr(module, k, f)
    try:
        yield
    finally:
        for k, f in orig.items():
            setattr(module, k, f)


@contextlib.contextmanager
def _dnf_neighbours():
    """Pass 1 of DNF: run RAIL's preselection and metric, keep their results and the
    call's natural neighbour truncation, skip the fit (its output is discarded)."""
    import rail.estimation.algos.dnf as dnf_mod

    rec = {}

    def preselection(*a, **k):
        res = dnf_mod_orig["preselection"](*a, **k)
        # de1 is a view of the (n, 4000) preselection distances: keep a copy only
        rec["de1"], rec["Nvalid"] = np.array(res[3], copy=True), res[4]
        return res

    def metric_computation(*a, **k):
        res = dnf_mod_orig["metric_computation"](*a, **k)
        rec["metric"] = tuple(np.array(x, copy=True) for x in res)   # (n, 80) neighbours
        return res

    def compute_photoz_mean_routliers(NEIGHBORS, Verr, pdf, Nvalid, zgrid):
        res = dnf_mod_orig["compute_photoz_mean_routliers"](NEIGHBORS, Verr, pdf, Nvalid, zgrid)
        rec["natural"] = int(np.max(res[4])) if len(res[4]) else 0
        return res

    def compute_photoz_fit(NEIGHBORS, V, Verr, T, z, fit, photoz, photozerr, photozerr_param,
                           photozerr_fit, pdf, zgrid):
        n = len(photoz)
        return (photoz, photozerr, photozerr_param, photozerr_fit, np.zeros(n), 0,
                np.ones((n, len(zgrid))))

    dnf_mod_orig = {k: getattr(dnf_mod, k) for k in
                    ("preselection", "metric_computation", "compute_photoz_mean_routliers")}
    with _patched(dnf_mod, preselection=preselection, metric_computation=metric_computation,
                  compute_photoz_mean_routliers=compute_photoz_mean_routliers,
                  compute_photoz_fit=compute_photoz_fit):
        yield rec


@contextlib.contextmanager
def _dnf_replay(rec: dict, forced: int):
    """Pass 2 of DNF: RAIL's estimator on the neighbours kept by pass 1, with the
    neighbour truncation forced to ``forced`` (the chunk's maximum)."""
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

    with _patched(dnf_mod, preselection=preselection, metric_computation=metric_computation,
                  compute_photoz_mean_routliers=compute_photoz_mean_routliers):
        yield


def _make_fast_bpz(model_path: str, params: dict):
    """pzpipe's vectorised BPZ (equal to RAIL's within 1e-6, tests/test_bpzfast.py)."""
    try:
        from .bpzfast import FastBPZ
    except ImportError:
        return None
    import pickle

    with open(model_path, "rb") as f:
        model = pickle.load(f)
    return FastBPZ(model, params)
