"""The shared estimator runner: one RAIL estimator (or its fast path) with its model loaded
once, called chunk by chunk. Nothing here is specific to one estimator: estimator modules
plug in through the hooks of their ``Algorithm`` (see ``_base.py``)."""

from __future__ import annotations

import contextlib
import logging
import pickle

import numpy as np

from pzpipe.core.columns import ID_COL
from pzpipe.core.zgrid import from_config
from ._base import Algorithm, chunk_seed, fast_path_for, load_ref, seed_everything, \
    seeded_default_rng, stage_params

log = logging.getLogger("pzpipe.algorithms")


class Runner:
    """Estimator for one algorithm with its model loaded once (one per worker).

    ``fast_path``: the ``FastPath`` in use, or None when RAIL's own code runs (no fast
    path, ``algorithms.<name>.fast: false``, or installed versions not verified).
    ``data_dir``: the algorithm's prepared data directory, if it declares one
    (``stage_params``)."""

    def __init__(self, algo: Algorithm, model_path: str, cfg: dict, name: str = "est",
                 data_dir: str | None = None):
        from rail.core.data import DataStore

        DataStore.allow_overwrite = True
        self.algo = algo
        self.cfg = cfg
        self.name = name
        self.zgrid = from_config(cfg)
        _, est_cls = algo.classes()
        params = stage_params(algo, cfg, "estimate", data_dir)
        # the pipeline computes its point estimates from the grid PDFs: skip RAIL's
        params.setdefault("calculated_point_estimates", [])
        self.params = params
        self.fast = None            # a standalone fast estimator
        self.fast_context = None
        self.stage = None
        self.fast_path = fast_path_for(algo, cfg)
        impl = None
        if self.fast_path is not None:
            try:
                impl = load_ref(self.fast_path.ref)
            except ImportError as exc:   # e.g. numba missing: RAIL's own code still works
                log.warning("%s: fast path off, running RAIL's own %s: cannot import %s (%s)",
                            algo.name, algo.estimator, self.fast_path.ref, exc)
                self.fast_path = None
        kind = self.fast_path.kind if self.fast_path is not None else None
        if kind == "standalone":
            with open(model_path, "rb") as f:
                model = pickle.load(f)
            self.fast = impl(model, dict(params))
        else:
            if kind == "estimator":
                est_cls = impl
            elif kind == "context":
                self.fast_context = impl
            self.stage = est_cls.make_stage(name=f"{name}_{algo.name}", model=model_path,
                                            output_mode="return", **params)
            stage = self.stage
            stage.open_model(**stage.config)           # load the model once
            stage.open_model = lambda *a, **k: stage.model
        self._chunk = None
        self._offset = 0

    def begin_chunk(self, chunk_index: int) -> None:
        """Start a chunk: seed the global random state for it (algorithms with
        ``seed_global_rng``: RAIL does not seed it) and reset the row offset."""
        self._chunk = chunk_index
        self._offset = 0
        if self.algo.seed_global_rng:
            seed_everything(chunk_seed(self.cfg["estimate"]["seed"], chunk_index))

    def estimate(self, data: dict[str, np.ndarray], chunk_index: int = 0, seed: bool = True):
        """Return (pdf on the pipeline grid (N, nz) float64, extras dict of arrays).

        ``seed``: start chunk ``chunk_index`` first (callers that split a chunk into
        sub-chunks call ``begin_chunk`` once and pass ``seed=False`` for each sub-chunk,
        in order)."""
        n = len(data[ID_COL])
        if n == 0:
            return np.zeros((0, len(self.zgrid))), {v: np.zeros(0) for v in self.algo.extras.values()}
        inp = {k: np.array(v, copy=True) for k, v in data.items()}   # RAIL mutates inputs
        if self.algo.input_transform is not None:
            inp = self.algo.input_transform(inp, self.params)
        if seed:
            self.begin_chunk(chunk_index)
        elif self._chunk != chunk_index:       # not started with begin_chunk: no seeding
            self._chunk, self._offset = chunk_index, 0
        algo = self.algo
        if algo.before_call is not None:
            algo.before_call(self, self._chunk, self._offset)
        if self.fast is not None:
            pdf, anc = self.fast.estimate(inp)
        elif algo.estimate_chunk is not None:
            pdf, anc = algo.estimate_chunk(self, inp)
        else:
            pdf, anc = self.rail_call(inp)
        self._offset += n
        if algo.postprocess is not None:
            pdf, anc = algo.postprocess(self, pdf, anc)
        extras = {}
        for key, col in algo.extras.items():
            if key in anc:
                extras[col] = np.asarray(anc[key]).reshape(n)
        return pdf, extras

    def rail_call(self, inp: dict[str, np.ndarray]):
        """One call of the RAIL stage on ``inp`` (modified in place): (pdf on the pipeline
        grid, ancil dict)."""
        # one core per worker: libraries asking joblib for n_jobs=-1 (loky processes)
        # oversubscribe the job's cores and can hang at worker exit
        import joblib

        with contextlib.ExitStack() as ctx:
            ctx.enter_context(joblib.parallel_config(backend="sequential"))
            if self.algo.seed_global_rng:
                ctx.enter_context(seeded_default_rng(int(np.random.randint(0, 2**31 - 1))))
            if self.fast_context is not None:
                ctx.enter_context(self.fast_context())
            ens = self.stage.estimate(inp).data
        n = len(inp[ID_COL])
        pdf = self.grid_pdf(ens).reshape(n, -1)
        anc = dict(ens.ancil or {})
        if self.algo.ancillaries is not None:
            anc.update(self.algo.ancillaries(ens))
        return pdf, anc

    def grid_pdf(self, ens) -> np.ndarray:
        """RAIL's PDFs on the pipeline grid (``grid_pdf``)."""
        return grid_pdf(ens, self.zgrid)


def grid_pdf_of_ensemble(ens, params: dict) -> np.ndarray:
    """``grid_pdf`` on the grid of RAIL parameters ``params`` (``zmin``, ``zmax``,
    ``nzbins``: the pipeline's grid, ``pzpipe.core.zgrid``), for standalone fast paths."""
    return grid_pdf(ens, np.linspace(params["zmin"], params["zmax"], params["nzbins"]))


def grid_pdf(ens, zgrid: np.ndarray) -> np.ndarray:
    """RAIL's PDFs on the pipeline grid ``zgrid``.

    An ``interp`` ensemble whose x values are the pipeline grid (to 1e-12: RAIL's BPZ
    builds its grid with ``arange``) gives its own y values at those nodes: qp's
    ``pdf()`` would re-interpolate them and change the last bits. Any other ensemble
    (other grids, Gaussians, mixtures) is evaluated with ``ens.pdf``."""
    x = (ens.metadata or {}).get("xvals")
    if x is not None and "yvals" in ens.objdata:
        x = np.ravel(np.asarray(x, dtype=np.float64))
        if x.shape == zgrid.shape and np.allclose(x, zgrid, rtol=0, atol=1e-12):
            return np.array(ens.objdata["yvals"], dtype=np.float64)
    return np.asarray(ens.pdf(zgrid), dtype=np.float64)
