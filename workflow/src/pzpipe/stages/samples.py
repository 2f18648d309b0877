"""Training and validation samples: read, transform like the catalog, apply the sample's cuts.

A sample (config ``training`` / ``validation``) is a parquet or HDF5 file with photometry
and a true redshift. It is transformed with exactly the catalog's code
(``partition.transform``: magnitudes, non-detections, dereddening, rounding), then cut
with the sample's own cuts:

- ``<sample>.cuts: null`` (default): the catalog's ``partition.cuts``, except the
  ``require_true`` columns the sample's file does not have (e.g. ``detect_isPrimary`` of
  a Rubin Object catalog, absent from the DC2 HDF5 samples); each skipped column is
  logged and recorded in the sample's info.
- ``<sample>.cuts: {...}``: exactly these cuts (same keys as ``partition.cuts``; keys
  not given take the schema defaults, i.e. no cut). A ``require_true`` column missing
  from the file is an error naming ``<sample>.cuts.require_true`` and the file.
"""

from __future__ import annotations

import copy
import logging

import numpy as np

from pzpipe import PipelineError
from pzpipe.core.io import available_columns, read_rows

log = logging.getLogger(__name__)

SECTIONS = ("training", "validation")


def _section_of(cfg: dict, sample: dict, section: str | None) -> str:
    if section:
        return section
    return next((k for k in SECTIONS if cfg.get(k) is sample), "training/validation")


def sample_config(cfg: dict, sample: dict) -> dict:
    """The config the sample is read with: the catalog's, with the sample's own column
    names, photometry kind and HDF5 group (no coordinates)."""
    from pzpipe.run.config import deep_update

    over = {"columns": dict(sample.get("columns") or {}), "inputs": {}}
    if sample.get("photometry"):
        over["inputs"]["photometry"] = sample["photometry"]
    if sample.get("hdf5_group") is not None:
        over["inputs"]["hdf5_group"] = sample["hdf5_group"]
    over["columns"].setdefault("ra", None)
    over["columns"].setdefault("dec", None)
    return deep_update(cfg, over)


def effective_cuts(cfg: dict, sample: dict, have: list[str], section: str,
                   path: str) -> tuple[dict, dict]:
    """(cuts to apply, description) for a sample whose file has the columns ``have``."""
    own = sample.get("cuts")
    if own is None:
        cuts = copy.deepcopy(cfg["partition"]["cuts"])
        skipped = [c for c in cuts["require_true"] if c not in have]
        if skipped:
            log.warning("%s sample '%s': catalog cut column(s) %s (partition.cuts.require_true) "
                        "not in the file: not applied to this sample. Set '%s.cuts' to choose "
                        "the sample's cuts explicitly.", section, path, skipped, section)
        cuts["require_true"] = [c for c in cuts["require_true"] if c in have]
        return cuts, {"source": "partition.cuts", "cuts": cuts, "skipped_require_true": skipped}
    cuts = copy.deepcopy(own)
    missing = [c for c in cuts.get("require_true", []) if c not in have]
    if missing:
        import difflib

        close = difflib.get_close_matches(missing[0], have, n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise PipelineError(
            f"{section} sample file '{path}': cut column(s) {missing} of "
            f"'{section}.cuts.require_true' not found in the file.{hint} Remove them from "
            f"'{section}.cuts.require_true', or set '{section}.cuts: null' to use the "
            f"catalog's cuts where the sample has the columns.")
    return cuts, {"source": f"{section}.cuts", "cuts": cuts, "skipped_require_true": []}


def load_sample(cfg: dict, sample: dict, section: str | None = None
                ) -> tuple[dict[str, np.ndarray], dict]:
    """Read a training/validation sample, transformed exactly like the release catalog
    and cut with the sample's cuts (module docstring).

    Returns (columns, info): the skinny columns plus ``redshift`` (float64), and a dict
    with the file, rows in/out, rows cut by reason and the cuts applied.
    """
    from pzpipe.stages import partition as _partition     # not at module level: partition re-exports
    from pzpipe.run.config import resolve_path          # read_sample from here
    from pzpipe.run.layout import file_rows

    section = _section_of(cfg, sample, section)
    scfg = sample_config(cfg, sample)
    path = resolve_path(sample["file"])
    group = scfg["inputs"]["hdf5_group"]
    nrows = file_rows(path, group)
    have = available_columns(path, group)
    cuts, cut_info = effective_cuts(scfg, sample, have, section, path)
    scfg["partition"] = {**scfg["partition"], "cuts": cuts}
    zcol = sample["redshift"]
    need = _partition.check_columns(path, scfg, extra=[zcol], extra_key=f"{section}.redshift")
    raw = read_rows(path, need, 0, nrows, group)
    skinny, stats = _partition.transform(raw, scfg, path, f"0-{nrows}", extra=[zcol])
    z = np.asarray(skinny.pop(zcol), dtype=np.float64)
    bad = ~np.isfinite(z)
    if bad.any():
        raise PipelineError(f"file '{path}': redshift column '{zcol}' has {int(bad.sum())} "
                            f"NaN/inf values; clean the sample.")
    skinny["redshift"] = z
    _partition.check_unique(skinny[_partition.ID_COL], f"file '{path}'", scfg["columns"]["id"])
    rows_cut = len(z)
    if sample.get("max_rows") and len(z) > sample["max_rows"]:
        rng = np.random.default_rng(sample.get("seed", 42))
        idx = np.sort(rng.choice(len(z), sample["max_rows"], replace=False))
        skinny = {k: v[idx] for k, v in skinny.items()}
    info = {"section": section, "file": path, "rows_in": stats["rows_in"],
            "rows_after_cuts": rows_cut, "rows": len(skinny["redshift"]),
            "cut_by_reason": stats["cut"], **cut_info}
    log.info("%s sample '%s': %d rows, %d after cuts %s, %d used", section, path,
             stats["rows_in"], rows_cut, stats["cut"], info["rows"])
    return skinny, info


def read_sample(cfg: dict, sample: dict, section: str | None = None) -> dict[str, np.ndarray]:
    """``load_sample`` without the info: the sample's columns plus ``redshift``."""
    return load_sample(cfg, sample, section)[0]
