"""The README.md written into a release: what the catalog is and how to open it.

``render(info) -> str`` (Markdown). The export passes ``info``:

    release, n_rows, algorithms (list), id_column, ra_column, dec_column,
    hats (bool: a HATS catalog, else a plain parquet dataset), zgrid [zmin, zmax, nz],
    pdf_encoding, columns [{name, type, unit, description}], flag_bits [{bit, meaning}],
    cut_by_reason {reason: count}, objects_in, code_version, config_hash,
    created (string), provenance_files (list of paths relative to the release)
    optional: repository (URL of the pzpipe repository, for the pip command; without it
    the README says to install from a checkout at the recorded git commit),
    collection {primary, margin, index} (directory names: the release is a HATS
    collection), margin {margin_arcsec, rows}, index {column}, input (what the input
    catalog was: name, description, synthetic, synthetic_note, files), bundle
    {estimators, validation} (the folder's self-contained parts), validation_md (the
    science-goal table, requirements.md)

The code snippets are run by tests/test_release_readme.py against a small release.
"""
from __future__ import annotations

from typing import Any

# the percentile levels of the err columns, exactly (pzpipe.release.pointest)
P68 = (15.865525393145707, 84.13447460685429)
P95 = (2.5, 97.5)


def _cell(x: Any) -> str:
    s = "" if x is None else str(x)
    return s.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _code_version(cv: Any) -> str:
    if isinstance(cv, dict):
        parts = [f"pzpipe {cv.get('pzpipe', '?')}"]
        if cv.get("git_commit"):
            parts.append(f"git {cv['git_commit'][:12]}" + (" (uncommitted changes)"
                                                           if cv.get("git_dirty") else ""))
        return ", ".join(parts)
    return str(cv)


def render(info: dict) -> str:
    """Markdown README of a release described by ``info`` (see the module docstring)."""
    need = ["release", "n_rows", "algorithms", "id_column", "zgrid", "pdf_encoding", "columns"]
    missing = [k for k in need if k not in info]
    if missing:
        raise KeyError(f"release_readme.render: missing keys {missing}")
    algos = list(info["algorithms"])
    a0 = algos[0] if algos else "<algo>"
    idc = info["id_column"]
    ra, dec = info.get("ra_column"), info.get("dec_column")
    hats = bool(info.get("hats"))
    zmin, zmax, nz = info["zgrid"]
    dz = (float(zmax) - float(zmin)) / (int(nz) - 1)
    repo = info.get("repository")
    cv = info.get("code_version") if isinstance(info.get("code_version"), dict) else {}
    commit = (cv.get("git_commit") or "")[:12]
    coll = info.get("collection") or {}
    primary = coll.get("primary") or ""
    inp = info.get("input") or {}
    bundle = info.get("bundle") or {}
    n_rows = int(info["n_rows"])
    cuts = info.get("cut_by_reason") or {}
    objects_in = info.get("objects_in")
    L: list[str] = []
    w = L.append

    w(f"# Photometric redshifts: {info['release']}")
    w("")
    w(f"Photo-z PDFs and point estimates for **{n_rows:,} objects**, one row per object, "
      f"computed by {f'[pzpipe]({repo})' if repo else 'pzpipe'} with the RAIL "
      f"estimators {', '.join(f'`{a}`' for a in algos)}. Join it to the Object catalog on "
      f"`{idc}`.")
    w("")
    if inp:
        if inp.get("synthetic"):
            w("**The input was synthetic, not survey data.** ")
        what = inp.get("name") or ", ".join(f"`{f}`" for f in inp.get("files") or [])
        w(f"Input: {what} ({int(inp.get('objects') or 0):,} objects)"
          + (f": {inp['description']}" if inp.get("description") else "") + ".")
        if inp.get("synthetic_note"):
            w("")
            w("From the input catalog's `SYNTHETIC.md`:")
            w("")
            for line in inp["synthetic_note"].strip().splitlines():
                w(f"> {line}" if line.strip() else ">")
        w("")
    if hats and coll.get("primary"):
        w(f"Format: a [HATS](https://hats.readthedocs.io) **collection** (open this directory "
          f"with [lsdb](https://docs.lsdb.io)): the photo-z catalog `{primary}/`, partitioned "
          f"like the input Object catalog, with coordinates `{ra}`, `{dec}` (degrees) and the "
          f"spatial index `_healpix_29`"
          + (f"; its margin catalog `{coll['margin']}/` (the rows within "
             f"{float((info.get('margin') or {}).get('margin_arcsec') or 0):g}\" outside each "
             f"pixel, so that crossmatches find neighbours across pixel edges)"
             if coll.get("margin") else "")
          + (f"; an index catalog `{coll['index']}/` on `{idc}` (lsdb's `id_search` reads it "
             f"instead of every pixel)" if coll.get("index") else "")
          + ". `collection.properties` names them.")
    elif hats:
        w(f"Format: a [HATS](https://hats.readthedocs.io) catalog, partitioned like the input "
          f"Object catalog (open it with [lsdb](https://docs.lsdb.io)); coordinates "
          f"`{ra}`, `{dec}` (degrees) and the spatial index `_healpix_29` are included.")
    else:
        w("Format: a parquet dataset (`dataset/part-bNNNNNN.parquet`, schema in "
          "`dataset/_common_metadata`); the input had no coordinates, so it is not a HATS "
          "catalog.")
    w("")
    w("## In numbers")
    w("")
    rows = [["objects in the release", f"{n_rows:,}"]]
    if objects_in is not None:
        rows.insert(0, ["objects in the input catalog", f"{int(objects_in):,}"])
    for reason, count in sorted(cuts.items()):
        rows.append([f"cut: {reason}", f"{int(count):,}"])
    rows += [["estimators", ", ".join(algos)],
             ["z grid", f"{int(nz)} points, {float(zmin):g} to {float(zmax):g} (dz = {dz:g}): "
                        f"`numpy.linspace({float(zmin):g}, {float(zmax):g}, {int(nz)})`"],
             ["PDF encoding", f"`{info['pdf_encoding']}`"]]
    if info.get("created"):
        rows.append(["created", info["created"]])
    if info.get("code_version") is not None:
        rows.append(["code", _code_version(info["code_version"])])
    if info.get("config_hash"):
        rows.append(["config hash (sha256)", f"`{info['config_hash']}`"])
    w(_table(["", ""], rows))
    if objects_in is not None:
        w("")
        w(f"Every input object is accounted for: {int(objects_in):,} in = {n_rows:,} released "
          f"+ {sum(int(c) for c in cuts.values()):,} cut (`conservation.json`, per chunk).")
    w("")

    w("## Opening it")
    w("")
    w("Without any package of ours: `decode_pdf.py` in this directory decodes a PDF value "
      "with numpy alone (the format is specified in `pdf_format.md`, also here). The "
      "snippets below use pzpipe's small reader (numpy, pyarrow, qp, and lsdb for the "
      "catalog; no RAIL or Snakemake), which also checks a copy of this folder:")
    w("")
    w("```bash")
    if repo:
        w(f'pip install "pzpipe[read] @ git+{repo}"')
    else:
        w(f'pip install "./[read]"    # in a checkout of pzpipe'
          + (f" at git commit {commit}" if commit else ""))
    w("pzpipe verify RELEASE      # every file's size, sha256, rows and schema against manifest.json")
    w("```")
    w("")
    w("In the snippets, `RELEASE` is the path of this directory.")
    w("")
    if hats:
        w("### lsdb")
        w("")
        w("```python")
        w("import lsdb")
        w("from pzpipe.release.read import to_ensemble")
        w("")
        w('RELEASE = "path/to/this/release"')
        w(f'cat = lsdb.open_catalog(RELEASE, columns=["{idc}", "{ra}", "{dec}", '
          f'"{a0}_z_median", "{a0}_pdf"])')
        w(f"rows = cat.cone_search(ra=RA_DEG, dec=DEC_DEG, radius_arcsec=600).compute()")
        w(f'ens = to_ensemble(rows, "{a0}", release=cat)   # qp.Ensemble of exactly these rows')
        if coll.get("index"):
            w(f'one = cat.id_search(values={{"{idc}": SOME_ID}}).compute()   # via the index')
        w("")
        w(f"# join to an Object catalog (same partitioning): on `{idc}`")
        w('objects = lsdb.open_catalog("path/to/object_catalog")')
        w(f'both = objects.join(cat, left_on="{idc}", right_on="{idc}", suffixes=("", "_pz"),')
        w('                    suffix_method="overlapping_columns")   # pz columns keep their names')
        w("```")
        w("")
        w("lsdb and pandas frames do not carry the parquet metadata that holds the z grid: "
          "give `release=` (the catalog object or the path of this directory).")
        w("")
    w("### pyarrow / pandas")
    w("")
    w("```python")
    w("import pyarrow.dataset as ds")
    w("from pzpipe.release.read import to_ensemble, pdf_grid")
    w("")
    w('RELEASE = "path/to/this/release"')
    sub = f"{primary}/dataset" if primary else "dataset"
    w(f'data = ds.dataset(f"{{RELEASE}}/{sub}", format="parquet",')
    w('                  exclude_invalid_files=True)   # skips _common_metadata')
    w(f'table = data.to_table(columns=["{idc}", "{a0}_z_median", "{a0}_flags", "{a0}_pdf"],')
    w(f'                      filter=ds.field("{idc}").isin(SOME_IDS))')
    w(f'ens = to_ensemble(table, "{a0}", release=RELEASE)   # z grid from the release metadata')
    w(f'z, pdf = pdf_grid(table, "{a0}", release=RELEASE)   # numpy (nz,), (n_rows, nz)')
    w("df = table.to_pandas()               # point estimates, flags")
    w("```")
    w("")
    w("Decode only the rows you need: a decoded PDF is "
      f"{int(nz) * 8:,} bytes (float64 on {int(nz)} points), the stored one ~15-33 bytes. "
      "Iterate over files, row groups or lsdb partitions for large selections.")
    w("")

    w("## PDFs")
    w("")
    w(f"`<estimator>_pdf` holds one binary value per object: the CDF on the z grid quantised "
      f"to 2^bits levels (`{info['pdf_encoding']}`), within 1e-3 of the estimator's own CDF "
      f"everywhere on [{float(zmin):g}, {float(zmax):g}]. **Null** means the estimator gave no "
      f"valid PDF (its point estimates are NaN and its flags have the invalid-PDF bit). "
      f"`pzpipe.release.read.to_ensemble` returns `qp.interp` ensembles on the z grid (decoded PDFs "
      f"integrate to 1 with the trapezoid rule); the byte layout is specified in "
      f"`pdf_format.md` (in this directory), with the 30-line decoder `decode_pdf.py`. The "
      f"grid and the encoding are "
      f"also in the parquet metadata: field metadata `zgrid`, `pdf_encoding` of each PDF "
      f"column, and the schema key `pzpipe` (JSON).")
    w("")
    w("Point estimates are computed from the full-precision PDF before compression: "
      "`z_mode`, `z_mean`, `z_median`; `z_err68_low`/`z_err68_high` are the "
      f"{P68[0]}th/{P68[1]}th percentiles (the central 68.27% interval, +-1 sigma of a "
      f"Gaussian) and `z_err95_low`/`z_err95_high` the {P95[0]}th/{P95[1]}th percentiles "
      "of the PDF (absolute redshifts, not offsets; linear interpolation of the trapezoid "
      "CDF on the z grid).")
    w("")

    w("## Columns")
    w("")
    w(_table(["column", "type", "unit", "description"],
             [[f"`{c['name']}`", c.get("type", ""), c.get("unit", "") or "",
               c.get("description", "")] for c in info["columns"]]))
    w("")
    if info.get("flag_bits"):
        w("## Flag bits (`<estimator>_flags`)")
        w("")
        w(_table(["bit", "value", "meaning"],
                 [[b["bit"], 1 << int(b["bit"]), b["meaning"]] for b in info["flag_bits"]]))
        w("")
        w(f"Test a bit: `(df[\"{a0}_flags\"] & (1 << bit)) != 0`.")
        w("")

    if info.get("validation_md") or bundle:
        w("## Validation")
        w("")
        if info.get("validation_md"):
            body = info["validation_md"].split("\n", 1)[1] if info["validation_md"].startswith("#") \
                else info["validation_md"]
            w(body.strip())
            w("")
        val = bundle.get("validation") or {}
        if val:
            w("All metrics, with their definitions: " + ", ".join(f"`{v}`" for v in val.values())
              + ".")
            w("")
    if bundle.get("estimators"):
        w("## Reproducing a PDF")
        w("")
        w("Per estimator, `estimators/<estimator>/` holds `rail.json` (the RAIL informer and "
          "estimator classes with every parameter as used, the package versions, the "
          "training file with its sha256, the seed), `model.pkl` (the trained model) and, when "
          "the estimator needs data files, `data/` (e.g. a template-fitting estimator's SED "
          "templates, filters and priors). With the packages of `rail.json` installed, "
          "`<rail_estimator>.make_stage(name=\"est\", model=\"model.pkl\", "
          "output_mode=\"return\", **estimate_params).estimate(photometry)` gives an "
          "object's PDF; the release's value is that PDF on the z grid, quantised as "
          "`pdf_format.md` describes.")
        w("")
    w("## Provenance")
    w("")
    files = list(info.get("provenance_files") or [])
    if files:
        w("Next to the data, in this directory:")
        w("")
        for f in files:
            w(f"- `{f}`")
        w("")
    w("`manifest.json` records the run (code version, configuration, package versions, "
      "model checksums, totals); `manifest_files.csv` every data file with its rows, bytes "
      "and sha256; `conservation.json` the object counts (in, released, cut by reason); "
      "the catalog's `properties` repeat the config hash, code version, z grid, PDF encoding "
      "and model checksums (`pzpipe_*` keys).")
    w("")
    return "\n".join(L)
