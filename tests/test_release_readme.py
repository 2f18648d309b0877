"""pzpipe.release.readme: the README.md of a release renders from the export's dict,
and its Python snippets run as written against a small release (HATS, via lsdb)."""
from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pzpipe.release import pdfstore, readme as release_readme

Z = np.linspace(0.0, 3.0, 301)
ALGOS = ["fzboost", "knn"]


def sample_info(**over):
    info = {
        "release": "dp1-test", "n_rows": 180, "algorithms": ALGOS, "id_column": "objectId",
        "ra_column": "coord_ra", "dec_column": "coord_dec", "hats": True,
        "zgrid": [0.0, 3.0, 301], "pdf_encoding": pdfstore.ENCODING,
        "columns": [{"name": "objectId", "type": "int64", "unit": "", "description": "Object id"},
                    {"name": "fzboost_z_median", "type": "float32", "unit": "",
                     "description": "median of the PDF | redshift"},
                    {"name": "fzboost_pdf", "type": "binary", "unit": "",
                     "description": "PDF (pzpipe-qcdf-d2/1)"}],
        "flag_bits": [{"bit": 0, "meaning": "not detected in u"},
                      {"bit": 17, "meaning": "invalid PDF"}],
        "cut_by_reason": {"no_detections": 12, "not_primary": 8}, "objects_in": 200,
        "code_version": {"pzpipe": "0.1.0", "git_commit": "0123456789abcdef", "git_dirty": False},
        "config_hash": "ab" * 32, "created": "2026-12-01T00:00:00Z",
        "provenance_files": ["manifest.json", "conservation.json"],
        "repository": "https://example.org/pzpipe.git",
    }
    info.update(over)
    return info


def test_renders_all_sections():
    md = release_readme.render(sample_info())
    for s in ("# Photometric redshifts: dp1-test", "**180 objects**", "`fzboost`, `knn`",
              "## Opening it", "### lsdb", "### pyarrow / pandas", "## PDFs", "## Columns",
              "## Flag bits", "## Provenance", "lsdb.open_catalog", "cone_search",
              'objects.join(cat, left_on="objectId"', 'suffix_method="overlapping_columns"', "to_ensemble", "pdf_grid",
              'pip install "pzpipe[read] @ git+https://example.org/pzpipe.git"',
              "numpy.linspace(0, 3, 301)", "| 17 | 131072 | invalid PDF |", "cut: no_detections",
              "200 in = 180 released + 20 cut", "`manifest.json`", "git 0123456789ab",
              "median of the PDF \\| redshift"):
        assert s in md, s
    flat = release_readme.render(sample_info(hats=False, ra_column=None, dec_column=None))
    assert "### lsdb" not in flat and "not a HATS" in flat and "### pyarrow / pandas" in flat
    with pytest.raises(KeyError, match="zgrid"):
        release_readme.render({k: v for k, v in sample_info().items() if k != "zgrid"})


def _catalog(tmp_path, with_pz=True):
    """A small HATS catalog written by lsdb; with the release metadata (contract) put
    into its _common_metadata. Returns the catalog directory (holding dataset/)."""
    lsdb = pytest.importorskip("lsdb")
    import pandas as pd

    rng = np.random.default_rng(5)
    n = 180
    cols = {"objectId": np.arange(1000, 1000 + n, dtype=np.int64),
            "coord_ra": rng.uniform(50, 60, n), "coord_dec": rng.uniform(-40, -30, n)}
    fields = {}
    for a in ALGOS if with_pz else []:
        mu = rng.uniform(0.2, 2.5, n)
        cols[f"{a}_z_median"] = mu.astype(np.float32)
        cols[f"{a}_flags"] = np.zeros(n, np.int32)
        cols[f"{a}_pdf"] = pdfstore.encode(np.exp(-0.5 * ((Z - mu[:, None]) / 0.1) ** 2), Z)
        fields[f"{a}_pdf"] = {"pdf_encoding": pdfstore.ENCODING, "zgrid": "[0.0, 3.0, 301]"}
    t = pa.table(cols)
    name = "pz" if with_pz else "objects"
    df = t.to_pandas(types_mapper=pd.ArrowDtype)
    lsdb.from_dataframe(df, ra_column="coord_ra", dec_column="coord_dec", catalog_name=name,
                        margin_threshold=None).write_catalog(tmp_path / name)
    root = tmp_path / name / name                     # lsdb writes a collection
    cm = root / "dataset" / "_common_metadata"
    sch = pq.read_schema(cm)
    if with_pz:
        sch = pa.schema([f.with_metadata(fields[f.name]) if f.name in fields else f for f in sch],
                        metadata={"pzpipe": json.dumps({"zgrid": [0.0, 3.0, 301],
                                                        "pdf_encoding": pdfstore.ENCODING,
                                                        "algorithms": ALGOS,
                                                        "id_column": "objectId"})})
        pq.write_metadata(sch, cm)
    return root, t


def test_snippets_run(tmp_path):
    release, t = _catalog(tmp_path)
    objects, _ = _catalog(tmp_path, with_pz=False)
    md = release_readme.render(sample_info())
    blocks = re.findall(r"```python\n(.*?)```", md, flags=re.S)
    assert len(blocks) == 2
    ids = t.column("objectId").to_numpy()
    for code in blocks:
        code = code.replace('"path/to/this/release"', repr(str(release)))
        code = code.replace('"path/to/object_catalog"', repr(str(objects)))
        code = code.replace("radius_arcsec=600", "radius_arcsec=3 * 3600")   # a sparse sample
        ns = {"RA_DEG": 55.0, "DEC_DEG": -35.0, "SOME_IDS": ids[::7].tolist()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(compile(code, "README snippet", "exec"), ns)
        ens = ns["ens"]
        if "rows" in ns:                                   # lsdb block
            rows = ns["rows"]
            assert 0 < len(rows) < len(ids) and ens.npdf == len(rows)
            ref = pdfstore.decode(t.column("fzboost_pdf"), Z)[np.searchsorted(ids, rows["objectId"])]
            np.testing.assert_array_equal(ens.objdata["yvals"], ref)
            both = ns["both"].compute()
            assert len(both) == len(ids) and "fzboost_pdf" in both.columns
            e2 = ns["to_ensemble"](both, "fzboost", release=ns["cat"])
            order = np.searchsorted(ids, both["objectId"].to_numpy())
            np.testing.assert_array_equal(
                e2.objdata["yvals"], pdfstore.decode(t.column("fzboost_pdf"), Z)[order])
        else:                                              # pyarrow block
            assert ens.npdf == len(ids[::7]) == len(ns["df"])
            assert ns["pdf"].shape == (len(ids[::7]), 301)
            sel = np.isin(ids, ns["df"]["objectId"].to_numpy())
            ref = pdfstore.decode(t.column("fzboost_pdf"), Z)[sel]
            order = np.argsort(ns["df"]["objectId"].to_numpy())
            np.testing.assert_array_equal(ens.objdata["yvals"][order], ref)
