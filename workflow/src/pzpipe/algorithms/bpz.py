"""BPZ (Bayesian template fitting): RAIL's ``BPZliteInformer`` / ``BPZliteEstimator``
(pz-rail-bpz).

Parameters the pipeline sets:
  * ``bpz_ref_data_path``: a writable copy of RAIL's template data prepared once per run
    (``results/bpz_data``, rule ``prepare_data``), with its 48 "AB" flux tables;
  * ``dz`` (estimate): RAIL's BPZ grid is ``arange(zmin, zmax + dz, dz)``; ``dz`` makes it
    the pipeline grid.

RAIL traps handled here:
  * BPZ writes its AB files into its data directory on first use (by default inside
    site-packages): parallel estimate jobs would race to write them. ``prepare_data``
    copies the data and generates them once, before any training or estimate job.
  * The informer with defaults fits nothing (HDFN prior): that is RAIL's behaviour, kept.

Fast path: ``bpz_fast.FastBPZ``, the same computation vectorised over objects (see its
docstring and ``FAST.guarantee``).

Extras: ``todds`` and ``t_best`` (RAIL ancil ``todds`` and ``tb``).
"""

from __future__ import annotations

import logging
import os

from ._base import Algorithm, DataDir, FastPath, stage_params

log = logging.getLogger("pzpipe.algorithms")

FAST = FastPath(
    ref="pzpipe.algorithms.bpz_fast:FastBPZ",
    kind="standalone",
    verified={"pz-rail-bpz": "2.2.0", "desc-bpz": "0.4.0", "pz-rail-base": "2.0.11",
              "qp-prob": "1.1.4", "numpy": "2.4.6"},
    guarantee=("bit-identical to RAIL's BPZliteEstimator: PDFs, zmode, t_best, todds and "
               "zmean compared with exact equality against RAIL itself in "
               "tests/test_algo_bpz.py (DC2 objects with non-detections, NaN and -99 "
               "magnitudes, fitted and HDFN priors, no prior, other grids); with "
               "gauss_kernel > 0 the PDFs are within 1e-14 relative"),
)


def _params(cfg: dict, kind: str) -> dict:
    if kind != "estimate":
        return {}
    z = cfg["zgrid"]
    return {"dz": (z["zmax"] - z["zmin"]) / (z["nz"] - 1)}


def prepare_data(cfg: dict, out_dir: str) -> None:
    """Copy RAIL's BPZ template data into ``out_dir`` and generate its AB files there."""
    import shutil

    from rail.utils.path_utils import find_rail_file

    shutil.copytree(find_rail_file("examples_data/estimation_data/data"), out_dir,
                    dirs_exist_ok=True)
    _, est_cls = ALGORITHM.classes()
    params = stage_params(ALGORITHM, cfg, "estimate")
    params["bpz_ref_data_path"] = os.path.abspath(out_dir)
    stage = est_cls.make_stage(name="bpz_prepare", output_mode="return", **params)
    stage._load_templates()      # generates the missing AB files
    n_ab = len([f for f in os.listdir(os.path.join(out_dir, "AB")) if f.endswith(".AB")])
    log.info("BPZ data in %s: %d AB files", out_dir, n_ab)
    try:   # FastBPZ's parsed flux tables for this grid (AB/.pzpipe-cache): estimate jobs read them
        import numpy as np

        from .bpz_fast import _rail_defaults, load_flux_templates

        p = {**_rail_defaults(), **params}
        load_flux_templates(params["bpz_ref_data_path"], p["spectra_file"], p["filter_list"],
                            np.linspace(p["zmin"], p["zmax"], p["nzbins"]), p["madau_flag"])
    except ImportError:     # no numba: RAIL's own estimator runs, nothing to cache
        pass


ALGORITHM = Algorithm(
    name="bpz",
    title="BPZ (template fitting, RAIL BPZ_lite)",
    module="rail.estimation.algos.bpz_lite",
    informer="BPZliteInformer",
    estimator="BPZliteEstimator",
    distribution="pz-rail-bpz",
    extras={"todds": "todds", "tb": "t_best"},
    extra_meta={
        "todds": {"description": "BPZ: fraction of the posterior (marginalised over z) "
                                 "carried by the best template at the mode", "unit": ""},
        "t_best": {"description": "BPZ: index (0-based, order of the spectra file) of the "
                                  "most probable template at the mode", "unit": ""},
    },
    params=_params,
    data_dir=DataDir(param="bpz_ref_data_path", prepare=prepare_data),
    fast=FAST,
    bench={"rows": 40000, "reference_hours": 9.0, "rail_pipeline": True},
)
