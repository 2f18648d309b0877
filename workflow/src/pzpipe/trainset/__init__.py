"""Training-set maker: spec-z compilation -> deduplication -> crossmatch -> split.

Five steps, one public function each (one Snakemake rule each, see
``workflow/rules/trainset.smk`` and ``docs/trainset.md``), one module each:

1. :func:`compile_specz` (``trainset.compile``) - read spec-z catalogs (parquet / CSV /
   FITS), rename their columns, homogenise flags (0-4, 4 best; :data:`STAR_FLAG` = 6 for
   stars) and instrument types, reject bad rows *counting them by reason*.
2. :func:`dedup_specz` (``trainset.dedup``) - self-crossmatch (KD-tree on unit vectors,
   friends-of-friends groups), keep one row per group (best flag > instrument priority >
   lowest id).
3. :func:`import_photometry_hats` (``trainset.photometry``) - import the photometric
   parquet files as a HATS collection (catalog + margin cache) with hats-import on a
   local dask cluster (skipped when the photometry is HATS already, see :func:`is_hats`).
4. :func:`crossmatch_specz` (``trainset.crossmatch``) - LSDB crossmatch of the spec-z
   rows (left) against the photometry (right, with margin), nearest neighbour within 1";
   a photometric object matched by several spec-z rows keeps one (best flag > distance >
   lowest id).
5. :func:`split_trainset` (``trainset.split``; the plot: ``trainset.plots``) - seeded
   train/test split (optionally stratified in redshift bins) written as parquet and
   HATS, with summary, plot and provenance.

The in-memory cores (:func:`deduplicate`, :func:`resolve_multimatches`,
:func:`split_indices`) are public too, for tests and notebooks. Constants, writers with
provenance and input fingerprints are in ``trainset._common``; this module holds the
config defaults (:data:`DEFAULTS`, from the config schema), :func:`settings` and the
rule entry points (``run_*``). Every public name is importable from ``pzpipe.trainset``.
"""

from __future__ import annotations

import copy

from .. import PipelineError
from pzpipe.run.config import resolve_path, schema_defaults
from ._common import (DEDUP_STATUS, INSTRUMENTS, META_KEY, REJECT_REASONS, SPECZ_COLUMNS,
                      STAR_FLAG, fingerprint, log_to, read_meta, versions)
from .compile import compile_specz, homogenise_catalog, read_table
from .crossmatch import crossmatch_specz, resolve_multimatches
from .dedup import dedup_specz, deduplicate, friends_of_friends
from .photometry import _parquet_inputs, dask_client, import_photometry_hats, is_hats
from .plots import plot_split
from .split import split_indices, split_trainset

__all__ = ["DEDUP_STATUS", "DEFAULTS", "INSTRUMENTS", "META_KEY", "REJECT_REASONS",
           "SPECZ_COLUMNS", "STAR_FLAG", "compile_specz", "crossmatch_specz", "dask_client",
           "dedup_specz", "deduplicate", "fingerprint", "friends_of_friends",
           "homogenise_catalog", "import_photometry_hats", "is_hats", "log_to",
           "photometry_files", "plot_split", "read_meta", "read_table", "resolve_multimatches",
           "run_compile", "run_crossmatch", "run_dedup", "run_import", "run_split", "settings",
           "split_indices", "split_trainset", "versions"]

#: defaults of the ``trainset:`` config section, read from its one source, the config
#: schema (workflow/schemas/config.schema.yaml, ``properties.trainset``)
DEFAULTS = schema_defaults("trainset")


def settings(config: dict | None) -> dict:
    """The ``trainset`` section of ``config`` (or ``config`` itself when it has no
    such key) merged over :data:`DEFAULTS` (two levels deep)."""
    section = (config or {}).get("trainset", config or {})
    out = copy.deepcopy(DEFAULTS)
    for key, val in (section or {}).items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key].update(val)
        else:
            out[key] = val
    return out


# --------------------------------------------------------------------------------------
# Rule entry points (workflow/rules/trainset.smk): settings + Snakemake's input/output.
def run_compile(ts: dict, output) -> dict:
    return compile_specz(ts["specz"]["catalogs"], output.table, output.report,
                         zmax=ts["specz"]["zmax"])


def run_dedup(ts: dict, input, output) -> dict:
    d = ts["dedup"]
    return dedup_specz(input[0], output.table, output.report, radius_arcsec=d["radius_arcsec"],
                       instrument_priority=d["instrument_priority"], star_rank=d["star_rank"],
                       conflict_dz=d["conflict_dz"])


def run_import(ts: dict, input, output, threads: int, mem_mb: int) -> str:
    p = ts["photometry"]
    if not p["path"]:
        raise PipelineError("config error at 'trainset.photometry.path': set the photometric "
                            "catalog (HATS or parquet) to cross-match with")
    return import_photometry_hats(
        list(input), output[0], ra_column=p["ra_column"], dec_column=p["dec_column"],
        catalog_name=p["catalog_name"], pixel_threshold=p["pixel_threshold"],
        highest_order=p["highest_order"], margin_arcsec=p["margin_arcsec"],
        margin_order=p["margin_order"], threads=threads, mem_mb=mem_mb,
        scheduler=ts["dask"]["scheduler"], tmp_dir=ts["dask"]["tmp_dir"])


def run_crossmatch(ts: dict, input, output, threads: int, mem_mb: int) -> dict:
    x, p = ts["crossmatch"], ts["photometry"]
    return crossmatch_specz(input.specz, input.photometry, output.table, output.report,
                            id_column=p["id_column"], radius_arcsec=x["radius_arcsec"],
                            min_flag=x["min_flag"], keep_stars=x["keep_stars"],
                            star_rank=ts["dedup"]["star_rank"], columns=p["columns"],
                            margin_cache=p["margin_cache"], threads=threads, mem_mb=mem_mb,
                            scheduler=ts["dask"]["scheduler"])


def run_split(ts: dict, input, outdir: str, threads: int, mem_mb: int) -> dict:
    s = ts["split"]
    return split_trainset(input[0], outdir, train_fraction=s["train_fraction"], seed=s["seed"],
                          stratify_zbins=s["stratify_zbins"], mag_column=s["mag_column"],
                          write_hats=s["write_hats"], threads=threads, mem_mb=mem_mb,
                          scheduler=ts["dask"]["scheduler"])


def photometry_files(ts: dict) -> list[str]:
    """The parquet files of ``trainset.photometry.path`` (file, directory or glob), for the
    import rule's input (a glob would be a missing literal input to Snakemake)."""
    path = ts["photometry"]["path"]
    paths = path if isinstance(path, list) else [path]
    return _parquet_inputs([resolve_path(p) for p in paths])
