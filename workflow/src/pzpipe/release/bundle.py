"""What makes a release folder usable alone: the PDF format spec and a numpy decoder, the
validation summary, and per estimator its complete RAIL configuration, model and data.

Called by the release job (``pzpipe.stages.export.run_collection``), which writes into the
release's temporary directory:

* ``pdf_format.md`` (a copy of docs/pdf_format.md, shipped in the package as
  ``pzpipe/data/pdf_format.md``) and ``decode_pdf.py``, the standalone decoder of that spec
  (numpy only, extracted from its "A standalone decoder" section, plus a command line);
* ``validation/``: ``metrics.md|csv`` and ``requirements.md|json`` of the run's
  validation (metrics and science goals per estimator);
* ``estimators/<algo>/``: ``rail.json`` (informer and estimator classes and their complete
  parameters: every ``config_options`` entry of the RAIL class with the value the pipeline
  used - its own or RAIL's default -, package versions, training file with sha256, seed),
  ``model.pkl`` (the trained model: the estimator's input, sha256 in the manifest) and the
  estimator's data files (e.g. BPZ's SED templates, filters and priors, from the run's
  ``results/<algo>_data``), so that a third party runs the RAIL estimator on an object's
  photometry and gets its PDF (tests/test_collection.py does, with knn and BPZ).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from importlib import resources
from pathlib import Path

DECODER_HEADER = '''"""Reference decoder of pzpipe's PDF column ({encoding}): numpy only.

From pdf_format.md (next to this file), section "A standalone decoder". Usage:

    python decode_pdf.py PIXEL_FILE.parquet ALGO [ROW]    # prints z, p(z) of a row
or  from decode_pdf import decode_pdf, zgrid

The z grid of this release: numpy.linspace({zmin!r}, {zmax!r}, {nz!r}).
"""
'''

DECODER_MAIN = '''

ZGRID = ({zmin!r}, {zmax!r}, {nz!r})


def zgrid():
    """The release's z grid."""
    return np.linspace(*ZGRID[:2], ZGRID[2])


if __name__ == "__main__":
    import sys

    import pyarrow.parquet as pq

    path, algo = sys.argv[1], sys.argv[2]
    row = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    value = pq.read_table(path, columns=[algo + "_pdf"]).column(0)[row].as_py()
    z = zgrid()
    for zi, pi in zip(z, decode_pdf(value, z)):
        print(f"{{zi:.4f}} {{pi:.6g}}")
'''


def pdf_format_text() -> str:
    """docs/pdf_format.md as shipped in the package (``pzpipe/data/pdf_format.md``)."""
    return resources.files("pzpipe").joinpath("data/pdf_format.md").read_text(encoding="utf-8")


def decoder_source(zgrid: list, encoding: str) -> str:
    """A runnable ``decode_pdf.py``: the spec's standalone decoder + the release's grid."""
    doc = pdf_format_text()
    section = doc.split("## A standalone decoder", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    zmin, zmax, nz = float(zgrid[0]), float(zgrid[1]), int(zgrid[2])
    return (DECODER_HEADER.format(encoding=encoding, zmin=zmin, zmax=zmax, nz=nz) + code
            + DECODER_MAIN.format(zmin=zmin, zmax=zmax, nz=nz))


def _jsonable(v):
    try:
        json.dumps(v)
        return v
    except TypeError:
        return repr(v)


def complete_params(cls, params: dict, name: str, **extra) -> dict:
    """The stage's complete configuration as RAIL resolves it (every ``config_options``
    entry: the pipeline's value or RAIL's default), from a stage made with ``params``
    (``extra``: e.g. ``model=``, not recorded). Nothing is read or run."""
    from rail.core.data import DataStore

    DataStore.allow_overwrite = True
    stage = cls.make_stage(name=name, **{**params, **extra})
    c = stage.config
    out = {k: _jsonable(c[k]) for k in c.keys() if k not in extra and k != "name"}
    for k, v in params.items():          # keys a module adds outside config_options
        out.setdefault(k, _jsonable(v))
    return dict(sorted(out.items()))


def estimator_record(algo_name: str, cfg: dict, sidecar: dict, data_dir: str | None,
                     data_rel: str | None, model_path: str) -> dict:
    """The ``rail.json`` of one estimator (see the module docstring). ``data_rel``: where
    the release holds the estimator's data directory (replaces the run's absolute path)."""
    from pzpipe import algorithms
    from pzpipe.algorithms._base import stage_params

    algo = algorithms.get(algo_name)
    inf_cls, est_cls = algo.classes()
    est = stage_params(algo, cfg, "estimate", data_dir)
    est.setdefault("calculated_point_estimates", [])
    inf = dict(sidecar.get("inform_params") or stage_params(algo, cfg, "inform", data_dir))
    for p in (est, inf):                 # RAIL's output_mode for in-memory use
        p.setdefault("output_mode", "return")
    inform_params = complete_params(inf_cls, inf, f"release_inform_{algo_name}")
    estimate_params = complete_params(est_cls, est, f"release_estimate_{algo_name}",
                                      model=model_path)
    if algo.clean_params is not None:
        inform_params = algo.clean_params(inform_params)
        estimate_params = algo.clean_params(estimate_params)
    if algo.data_dir is not None and data_rel is not None:
        for rec in (inform_params, estimate_params):
            if algo.data_dir.param in rec:
                rec[algo.data_dir.param] = data_rel
    pk = sidecar.get("packages") or {}
    wanted = {algo.distribution, "pz-rail-base", "qp-prob", "numpy", "scipy", "python",
              "scikit-learn", "pzpipe"}
    return {
        "algorithm": algo_name,
        "rail_informer": f"{inf_cls.__module__}.{inf_cls.__name__}",
        "rail_estimator": f"{est_cls.__module__}.{est_cls.__name__}",
        "inform_params": inform_params,
        "estimate_params": estimate_params,
        "model": "model.pkl", "model_sha256": sidecar.get("model_sha256"),
        "training_file": sidecar.get("training_file"), "training_inputs": sidecar.get("inputs"),
        "training_rows": sidecar.get("training_rows"), "seed": sidecar.get("seed"),
        "packages": {k: v for k, v in sorted(pk.items()) if k in wanted},
        "all_packages": pk,
        "data_dir": data_rel,
        "pipeline_fast_path": bool((cfg["algorithms"].get(algo_name) or {}).get("fast", True)),
        "how": ("est = <rail_estimator>.make_stage(name='est', model='model.pkl', "
                "output_mode='return', **estimate_params); ens = est.estimate(data) with data a "
                "dict of numpy arrays named as in estimate_params['bands'] / ['err_bands'] "
                "(magnitudes: mag = -2.5 log10(flux_nJy) + 31.4, non-detections = "
                "nondetect_val); the release's PDF is ens.pdf(z) on the z grid, normalised, "
                "quantised as pdf_format.md describes"),
    }


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_bundle(tmp: Path, *, cfg: dict, algos: list[str], zgrid: list, encoding: str,
                 sidecars: dict[str, str], models: dict[str, str],
                 data_dirs: dict[str, str], validation: dict[str, str]) -> dict:
    """Write the bundle into the release directory ``tmp``; returns what the README
    cites: ``{"estimators": {algo: dir}, "validation": {name: path}, "data_files": n}``."""
    tmp = Path(tmp)
    (tmp / "pdf_format.md").write_text(pdf_format_text(), encoding="utf-8")
    (tmp / "decode_pdf.py").write_text(decoder_source(zgrid, encoding), encoding="utf-8")
    val = {}
    if validation:
        (tmp / "validation").mkdir(exist_ok=True)
        for name, src in sorted(validation.items()):
            if src and os.path.isfile(src):
                shutil.copyfile(src, tmp / "validation" / name)
                val[name] = f"validation/{name}"
    est_dirs = {}
    n_data = 0
    for a in algos:
        d = tmp / "estimators" / a
        d.mkdir(parents=True, exist_ok=True)
        side = json.loads(Path(sidecars[a]).read_text())
        data_rel = None
        if a in data_dirs and data_dirs[a]:
            src = Path(data_dirs[a])
            dst = d / "data"
            for f in sorted(src.rglob("*")):
                if f.is_file() and not f.name.startswith("."):
                    t = dst / f.relative_to(src)
                    t.parent.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(str(f), str(t))
                    n_data += 1
            data_rel = "data"
        rec = estimator_record(a, cfg, side, data_dirs.get(a), data_rel, models[a])
        (d / "rail.json").write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
        _link_or_copy(models[a], str(d / "model.pkl"))
        est_dirs[a] = f"estimators/{a}"
    return {"estimators": est_dirs, "validation": val, "data_files": n_data}
