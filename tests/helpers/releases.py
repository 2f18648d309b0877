"""A release made without Snakemake, by calling the stages' own functions in the order the
rules do (partition -> train -> estimate -> export_batch -> export_dedup -> export ->
margin_batch, index_batch, index_bucket -> release), with
real estimators (kNN: trained in a few seconds). For tests that need a release of a
particular layout (files without coordinates, fully cut chunks, several pixels per batch)
without the cost of a Snakemake run.
"""
from __future__ import annotations

import json
from pathlib import Path

from .runs import PATHS


def paths_in(root: Path) -> dict:
    """The workflow's PATHS rooted at ``root`` (absolute)."""
    return {k: str(Path(root) / v) for k, v in PATHS.items()}


def build_release(root: Path, cfg: dict, algos: list[str], imported: str | None = None) -> dict:
    """Run every stage for ``cfg`` under ``root`` (paths as in the workflow); returns
    ``{"paths": PATHS under root, "layout": layout, "cfg": cfg (with catalog columns)}``."""
    from pzpipe.stages import estimate, export, partition, train
    from pzpipe.run.layout import catalog_columns, make_layout

    p = paths_in(root)
    lay = make_layout(cfg, imported=imported)
    cfg = catalog_columns(cfg, lay)
    for a in algos:
        train.run(a, cfg, p["model"].format(algo=a), p["sidecar"].format(algo=a))
    k = export.n_buckets(lay.n_objects, cfg["export"]["dedup_ids_per_job"])
    dirs, ids = [], []
    for b in lay.batch_ids():
        part = p["partition"].format(batch=b)
        partition.run_batch(lay, b, cfg, part)
        ests = {}
        for a in algos:
            ests[a] = p["estimate"].format(algo=a, batch=b)
            estimate.run_batch(a, part, p["model"].format(algo=a), cfg, ests[a], workers=1)
        dirs.append(str(root / "results" / "export" / "batches" / b))
        ids.append(str(root / "results" / "export" / "ids" / f"{b}.parquet"))
        export.run_batch(lay, b, algos, cfg, part, ests, dirs[-1], ids[-1], k)
    reports = [str(root / "results" / "export" / "dedup" / f"{j}.json") for j in range(k)]
    for j in range(k):
        export.run_dedup(ids, j, reports[j])
    sidecars = {a: p["sidecar"].format(algo=a) for a in algos}
    export.run_release(lay, algos, cfg, dirs, reports, sidecars, p["export_catalog"])
    margins, indexes = [], []
    if lay.is_hats:                   # the collection's margin and id index (rules/export.smk)
        from pzpipe.stages import collection

        idc = cfg["columns"]["id"]
        for b, d in zip(lay.batch_ids(), dirs):
            margins.append(p["export_margin"].format(batch=b))
            collection.run_margin_batch(p["export_catalog"], b, cfg["export"]["margin_arcsec"],
                                        margins[-1])
            collection.run_index_batch(d, idc, p["export_index_batch"].format(batch=b))
        files = [p["export_index_batch"].format(batch=b) for b in lay.batch_ids()]
        for j in range(k):
            indexes.append(p["export_index"].format(bucket=j))
            collection.run_index_bucket(files, j, k, idc, indexes[-1])
    export.run_collection(lay, algos, cfg, p["export_catalog"], margins, indexes, p["release"],
                          sidecars=sidecars, models={a: p["model"].format(algo=a) for a in algos},
                          input_catalog=imported or cfg["inputs"].get("hats"))
    return {"paths": p, "layout": lay, "cfg": cfg}


def manifest(release_dir) -> dict:
    return json.loads((Path(release_dir) / "manifest.json").read_text())
