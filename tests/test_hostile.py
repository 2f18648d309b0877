"""Hostile input corpus: every bad input gives one clear message naming the file, column or
config key (or a documented flag), loses no object and leaves no partial output file.

Cases already covered elsewhere are not repeated here: renamed/misspelt columns,
non-numeric photometry, duplicate ids within a batch, an all-NaN band, NaN ids and a
truncated parquet (test_partition.py); empty/junk/missing files (test_layout.py);
NaN/inf/zero/negative fluxes in one band (test_partition.py); unknown keys, wrong
types, unknown algorithms, shell metacharacters in `release` (test_config.py).

The fixes these tests led to are listed in docs/reliability.md ("Fixes").
The `cli` tests drive the real `snakemake` command line (a few seconds each).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from helpers.inputs import flux_config, make_flux_table, write_parquet
from helpers.runs import smk
from pzpipe import PipelineError
from pzpipe.run.config import validate_config
from pzpipe.run.layout import make_layout
from pzpipe.stages.partition import FLAG_BAD_ERR, run_batch

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers
def _leftovers(d: Path) -> list[str]:
    """Files under ``d`` (partial outputs, temporaries)."""
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()) if d.exists() else []


def _partition_fails(tmp_path, cols, match, **over):
    """Partition ``cols`` as a parquet input; assert one PipelineError and no output."""
    p = write_parquet(tmp_path / "in.parquet", cols)
    cfg = flux_config([p], **over)
    out_dir = tmp_path / "out"
    with pytest.raises(PipelineError, match=match) as ei:
        run_batch(make_layout(cfg), "b000000", cfg, str(out_dir / "b000000.parquet"))
    assert _leftovers(out_dir) == []
    assert "\n" not in str(ei.value)                 # one line
    return str(ei.value)


def _partition_ok(tmp_path, cols, **over):
    p = write_parquet(tmp_path / "in.parquet", cols)
    cfg = flux_config([p], **over)
    out = tmp_path / "out" / "b000000.parquet"
    meta = run_batch(make_layout(cfg), "b000000", cfg, str(out))
    ch = meta["chunks"][0]
    assert ch["rows_in"] == ch["rows_out"] + sum(ch["cut"].values())    # nothing lost
    return pq.read_table(out), ch


def _raw_config():
    with open(REPO / "config" / "config.yaml") as f:
        return yaml.safe_load(f)


# ----------------------------------------------------------------------------- dtypes
def test_string_ids_are_refused(tmp_path):
    cols = make_flux_table(20)
    cols["objectId"] = np.array([f"obj{i}" for i in range(20)])
    _partition_fails(tmp_path, cols, r"in\.parquet.*id column 'objectId' must hold integers")


def test_null_ids_are_refused(tmp_path):
    cols = make_flux_table(20)
    cols["objectId"] = pa.array([None] + list(range(19)), pa.int64())
    _partition_fails(tmp_path, cols, r"in\.parquet.*'objectId' must hold integers.*NaN")


def test_narrow_dtypes_are_widened(tmp_path):
    """int32 ids and float32 fluxes are valid input: same magnitudes as float64."""
    cols = make_flux_table(30)
    ref, _ = _partition_ok(tmp_path, dict(cols))
    cols["objectId"] = cols["objectId"].astype(np.int32)
    for b in "ugrizy":
        cols[f"{b}_gaap1p0Flux"] = cols[f"{b}_gaap1p0Flux"].astype(np.float32)
    (tmp_path / "out" / "b000000.parquet").unlink()
    t, _ = _partition_ok(tmp_path, cols)
    assert t.schema.field("object_id").type == pa.int64()
    np.testing.assert_allclose(t.column("mag_r_lsst").to_numpy(), ref.column("mag_r_lsst").to_numpy(),
                               atol=1e-5)


def test_null_fluxes_are_nondetections(tmp_path):
    """Arrow nulls in a flux column are non-detections (flag bit of the band), not lost."""
    cols = make_flux_table(20)
    cols["g_gaap1p0Flux"] = pa.array([None] * 3 + list(cols["g_gaap1p0Flux"][3:]))
    t, ch = _partition_ok(tmp_path, cols)
    assert ch["rows_out"] == 20
    assert np.all(t.column("flags").to_numpy()[:3] & (1 << 1))
    assert np.all(t.column("mag_g_lsst").to_numpy()[:3] == 99.0)


def test_bad_errors_are_flagged(tmp_path):
    """Zero, negative and infinite flux errors on detections: flag bit 16, non-detection."""
    cols = make_flux_table(20)
    e = cols["g_gaap1p0FluxErr"].copy()
    e[:3] = [0.0, -1.0, np.inf]
    cols["g_gaap1p0FluxErr"] = e
    t, ch = _partition_ok(tmp_path, cols)
    flags = t.column("flags").to_numpy()
    assert np.all(flags[:3] & FLAG_BAD_ERR) and np.all(flags[:3] & (1 << 1))
    assert not np.any(flags[3:] & FLAG_BAD_ERR)


def test_rows_bad_in_every_band_are_cut_and_counted(tmp_path):
    """Every kind of bad flux (NaN, +inf, -inf, 0, negative, null) in all bands: cut as
    no_detections and counted, never dropped silently."""
    cols = make_flux_table(30)
    bad = [np.nan, np.inf, -np.inf, 0.0, -12.0]
    for b in "ugrizy":
        f = cols[f"{b}_gaap1p0Flux"].astype(np.float64).copy()
        f[:5] = bad
        cols[f"{b}_gaap1p0Flux"] = f
    t, ch = _partition_ok(tmp_path, cols)
    assert ch["cut"]["no_detections"] == 5 and ch["rows_out"] == 25
    assert set(t.column("object_id").to_numpy()) == set(cols["objectId"][5:])


def test_nested_column_gives_clear_message(tmp_path):
    cols = make_flux_table(20)
    cols["i_gaap1p0Flux"] = pa.array([[1.0]] * 20)
    _partition_fails(tmp_path, cols, r"in\.parquet.*'i_gaap1p0Flux'")


def test_uint64_ids_beyond_int64_are_refused(tmp_path):
    cols = make_flux_table(20)
    cols["objectId"] = np.arange(20, dtype=np.uint64) + np.uint64(2**63 + 5)
    _partition_fails(tmp_path, cols, r"id column 'objectId'.*int64")


def test_boolean_photometry_is_refused(tmp_path):
    cols = make_flux_table(20)
    cols["g_gaap1p0Flux"] = np.ones(20, dtype=bool)
    _partition_fails(tmp_path, cols, r"column 'g_gaap1p0Flux'.*(numeric|number|bool)")


def test_require_true_with_boolean_parquet_column(tmp_path):
    cols = make_flux_table(40)
    cols["detect_isPrimary"] = pa.array([False] * 5 + [None] * 3 + [True] * 32)
    t, ch = _partition_ok(tmp_path, cols, partition={"cuts": {"require_true": ["detect_isPrimary"]}})
    assert ch["cut"]["require_true"] == 8 and ch["rows_out"] == 32       # nulls count as False


# ----------------------------------------------------------------------------- files
def test_corrupt_data_page_with_valid_footer(tmp_path):
    cols = make_flux_table(3000)
    p = write_parquet(tmp_path / "mid.parquet", cols, row_group_size=1000)
    b = bytearray(Path(p).read_bytes())
    rng = np.random.default_rng(1)
    b[len(b) // 3:len(b) // 3 + 2000] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    Path(p).write_bytes(bytes(b))
    cfg = flux_config([p])
    lay = make_layout(cfg)                  # the footer is intact: planning works
    out = tmp_path / "out" / "b000000.parquet"
    with pytest.raises(PipelineError, match=r"mid\.parquet.*re-stage"):
        run_batch(lay, "b000000", cfg, str(out))
    assert _leftovers(tmp_path / "out") == []


def test_schema_only_parquet_with_zero_rows(tmp_path):
    p = write_parquet(tmp_path / "zero.parquet", make_flux_table(0))
    with pytest.raises(PipelineError, match=r"zero\.parquet' has 0 rows"):
        make_layout(flux_config([p]))


def test_input_changed_after_planning(tmp_path):
    """The DAG is planned from footers (or a HATS catalog's statistics); a file that shrinks
    or grows before its job runs is caught (rows beyond the planned count would otherwise
    never be read: a silent drop)."""
    cols = make_flux_table(300)
    p = write_parquet(tmp_path / "in.parquet", cols)
    cfg = flux_config([p])
    lay = make_layout(cfg)
    write_parquet(p, {k: v[:200] for k, v in cols.items()})
    out = tmp_path / "out" / "b000000.parquet"
    with pytest.raises(PipelineError, match=r"in\.parquet' holds 200 rows but the layout .* says 300"):
        run_batch(lay, "b000000", cfg, str(out))
    write_parquet(p, make_flux_table(400))
    with pytest.raises(PipelineError, match=r"in\.parquet' holds 400 rows but the layout .* says 300"):
        run_batch(lay, "b000000", cfg, str(out))
    Path(p).unlink()
    with pytest.raises(PipelineError, match=r"in\.parquet"):
        run_batch(lay, "b000000", cfg, str(out))
    assert _leftovers(tmp_path / "out") == []


def test_hdf5_wrong_group_and_missing_column(tmp_path):
    import h5py

    cols = make_flux_table(50)
    h = tmp_path / "cat.hdf5"
    with h5py.File(h, "w") as f:
        g = f.create_group("photometry")
        for k, v in cols.items():
            g[k] = v
    with pytest.raises(PipelineError, match=r"cat\.hdf5.*group 'phot'.*inputs\.hdf5_group"):
        make_layout(flux_config([h], inputs={"hdf5_group": "phot"}))
    cfg = flux_config([h], columns={"id": "objid"})
    with pytest.raises(PipelineError, match=r"cat\.hdf5.*column 'objid' not found.*objectId"):
        run_batch(make_layout(cfg), "b000000", cfg, str(tmp_path / "out" / "b.parquet"))
    assert _leftovers(tmp_path / "out") == []


def test_duplicate_ids_across_files_are_caught_at_export(tmp_path):
    """Duplicates inside a batch stop the partition job; duplicates across batches (files)
    are found by the export's bucketed duplicate check, which names them and, given the
    config (as the rule passes it), the user's files and rows that hold them."""
    from pzpipe.stages import export

    a = write_parquet(tmp_path / "a.parquet", make_flux_table(40))
    b = write_parquet(tmp_path / "b.parquet", make_flux_table(40, seed=1, start_id=31))
    cfg = flux_config([a, b], partition={"chunk_rows": 40}, batch={"chunks_per_batch": 1})
    lay = make_layout(cfg)
    ids = []
    for bid in lay.batch_ids():
        p = tmp_path / f"{bid}.parquet"
        run_batch(lay, bid, cfg, str(p))
        ids.append(str(tmp_path / f"ids-{bid}.parquet"))
        export.write_id_buckets(pq.read_table(p, columns=["object_id"]).column(0).to_numpy(),
                                1, ids[-1], bid)
    with pytest.raises(PipelineError, match=r"10 object id\(s\) appear in more than one batch.*31"):
        export.run_dedup(ids, 0, str(tmp_path / "dedup.json"))
    with pytest.raises(PipelineError) as ei:
        export.run_dedup(ids, 0, str(tmp_path / "dedup.json"), cfg)
    msg = str(ei.value)
    assert "\n" not in msg and "id column 'objectId'" in msg
    assert f"id 31 at file '{a}' row 30 and file '{b}' row 0" in msg, msg
    assert not (tmp_path / "dedup.json").exists()


def test_duplicate_ids_in_a_batch_name_the_files_and_rows(tmp_path):
    """Within one batch (the partition's check): the same id in two files and twice in
    one file, each named with its rows."""
    ta, tb = make_flux_table(30), make_flux_table(30, seed=1, start_id=100)
    ta["objectId"][7] = ta["objectId"][3]                 # twice in a.parquet
    tb["objectId"][12] = ta["objectId"][20]               # in a.parquet and b.parquet
    a = write_parquet(tmp_path / "a.parquet", ta)
    b = write_parquet(tmp_path / "b.parquet", tb)
    cfg = flux_config([a, b], partition={"chunk_rows": 30}, batch={"chunks_per_batch": 2})
    with pytest.raises(PipelineError) as ei:
        run_batch(make_layout(cfg), "b000000", cfg, str(tmp_path / "out" / "b000000.parquet"))
    msg = str(ei.value)
    assert "\n" not in msg and msg.startswith("2 duplicate value(s) in id column 'objectId'")
    assert f"id 4 at file '{a}' row 3 and file '{a}' row 7" in msg, msg
    assert f"id 21 at file '{a}' row 20 and file '{b}' row 12" in msg, msg
    assert _leftovers(tmp_path / "out") == []


@pytest.mark.parametrize("dtype,value,limit", [
    (np.float64, 2.0**53 + 2, 53),       # integral, but beyond 2**53: already rounded
    (np.float64, 12.5, 53),              # a fraction
    (np.float32, 2.0**24 + 2, 24),       # float32: exact only to 2**24
])
def test_float_ids_are_refused_unless_exact_integers(tmp_path, dtype, value, limit):
    cols = make_flux_table(20)
    ids = cols["objectId"].astype(dtype)
    ids[5] = value
    cols["objectId"] = ids
    msg = _partition_fails(
        tmp_path, cols, rf"file '.*in\.parquet' rows 0-20: id column 'objectId' holds "
                        rf"floating-point ids.*1 are not exact integers.*2\*\*{limit}")
    shown = str(int(value)) if value == int(value) else repr(value)
    assert f"e.g. {shown} in row 5)" in msg, msg


def test_float_ids_that_are_exact_integers_are_accepted(tmp_path):
    """Integral float64 ids up to 2**53 (negative too) are the same ids as integers."""
    cols = make_flux_table(20)
    ids = cols["objectId"].astype(np.int64)
    ids[0], ids[1] = 2**53, -(2**53)
    cols["objectId"] = ids.astype(np.float64)
    t, _ = _partition_ok(tmp_path, cols)
    np.testing.assert_array_equal(t.column("object_id").to_numpy(), ids)


def test_import_refuses_float_ids_naming_the_users_file(tmp_path):
    """The HATS import (rule import_objects) checks the user's files first: the error names
    the file and column, not the imported catalog, and nothing is imported."""
    from pzpipe.stages.partition import import_objects

    ta, tb = make_flux_table(30), make_flux_table(30, seed=1, start_id=100)
    tb["objectId"] = tb["objectId"].astype(np.float64)
    tb["objectId"][29] = 2.0**60
    a = write_parquet(tmp_path / "a.parquet", ta)
    b = write_parquet(tmp_path / "b.parquet", tb, row_group_size=10)
    cfg = flux_config([a, b])
    with pytest.raises(PipelineError, match=rf"^file '{re.escape(b)}' rows 0-30: id column "
                                            r"'objectId' holds floating-point ids.*e\.g\. "
                                            r"1152921504606846976 in row 29\)") as ei:
        import_objects([a, b], cfg, str(tmp_path / "objects_hats"))
    assert "\n" not in str(ei.value)
    assert not (tmp_path / "objects_hats").exists()


@pytest.fixture(scope="module")
def imported_collisions(tmp_path_factory):
    """Two user files imported as HATS by the import rule's function; rows 5-7 of b.parquet
    reuse the ids of rows 10-12 of a.parquet at other positions (colliding ids of distinct
    objects), so the imported catalog holds them in other pixels."""
    from pzpipe.stages.partition import import_objects

    d = tmp_path_factory.mktemp("imported")
    ta, tb = make_flux_table(60), make_flux_table(60, seed=1, start_id=1000)
    tb["objectId"][5:8] = ta["objectId"][10:13]
    tb["ra"][5:8] = ta["ra"][10:13] + 20.0
    a = write_parquet(d / "a.parquet", ta)
    b = write_parquet(d / "b.parquet", tb)
    cfg = flux_config([a, b], inputs={"to_hats": {"enabled": True, "pixel_threshold": 20,
                                                   "dask": {"threads": 1}}})
    out = d / "objects_hats"
    import_objects([a, b], cfg, str(out), threads=1, mem_mb=2000)
    return cfg, str(out), a, b


def test_duplicate_ids_of_an_imported_catalog_name_the_users_files(imported_collisions, tmp_path):
    """Partition (one batch of every chunk) and export (one chunk per batch: the bucketed
    check) of the imported catalog: the error names the user's files and rows, never the
    pipeline's imported pixel files."""
    from pzpipe.run.config import deep_update
    from pzpipe.stages import export

    cfg0, cat, a, b = imported_collisions
    expect = [f"id {i} at file '{a}' row {i - 1} and file '{b}' row {i - 6}" for i in (11, 12, 13)]
    cfg = deep_update(cfg0, {"partition": {"chunk_rows": 1000}, "batch": {"chunks_per_batch": 1000}})
    lay = make_layout(cfg, imported=cat)
    assert len(lay.batch_ids()) == 1 and all(c.file.startswith(cat) for c in lay.chunks())
    with pytest.raises(PipelineError) as ei:
        run_batch(lay, lay.batch_ids()[0], cfg, str(tmp_path / "p.parquet"))
    msg = str(ei.value)
    assert "\n" not in msg and all(e in msg for e in expect) and cat not in msg, msg

    cfg = deep_update(cfg0, {"partition": {"chunk_rows": 1000}, "batch": {"chunks_per_batch": 1}})
    lay = make_layout(cfg, imported=cat)
    ids = []
    for bid in lay.batch_ids():           # each batch alone has no duplicate
        p = tmp_path / f"{bid}.parquet"
        run_batch(lay, bid, cfg, str(p))
        ids.append(str(tmp_path / f"ids-{bid}.parquet"))
        export.write_id_buckets(pq.read_table(p, columns=["object_id"]).column(0).to_numpy(),
                                1, ids[-1], bid)
    with pytest.raises(PipelineError, match=r"^3 object id\(s\) appear in more than one batch") as ei:
        export.run_dedup(ids, 0, str(tmp_path / "dedup.json"), cfg)
    msg = str(ei.value)
    assert "\n" not in msg and all(e in msg for e in expect) and cat not in msg, msg


def test_training_sample_problems_name_file_and_column(tmp_path):
    from pzpipe.stages.samples import read_sample

    cfg = flux_config([write_parquet(tmp_path / "x.parquet", make_flux_table(10))])
    tr = make_flux_table(100)
    tr["redshift"] = tr["redshift"].copy()
    tr["redshift"][3] = np.inf
    p = write_parquet(tmp_path / "train.parquet", tr)
    with pytest.raises(PipelineError, match=r"train\.parquet.*redshift column 'redshift'.*NaN/inf"):
        read_sample(cfg, {"file": p, "redshift": "redshift"})
    with pytest.raises(PipelineError, match=r"train\.parquet.*'zspec' not found.*Set 'training/validation\.redshift'"):
        read_sample(cfg, {"file": p, "redshift": "zspec"})
    c2 = dict(cfg, training={"file": p, "redshift": "zspec"})
    with pytest.raises(PipelineError, match=r"'zspec' not found.*Set 'training\.redshift' to the file's column"):
        read_sample(c2, c2["training"])


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("edit, match", [
    (lambda r: r.__setitem__("bands", "ugrizy"), r"'bands'.*not of type 'array'"),
    (lambda r: r["inputs"].__setitem__("files", "a.parquet"), r"'inputs\.files'.*not of type"),
    (lambda r: r["estimate"].__setitem__("workers", 0), r"'estimate\.workers'.*minimum"),
    (lambda r: r["zgrid"].__setitem__("nz", 1), r"'zgrid\.nz'"),
    (lambda r: r["zgrid"].__setitem__("zmax", -1.0), r"'zgrid'.*zmax"),
    (lambda r: r["partition"].__setitem__("chunk_rows", 1.5), r"'partition\.chunk_rows'.*integer"),
    (lambda r: r["partition"].__setitem__("chunk_rows", True), r"'partition\.chunk_rows'.*integer"),
    (lambda r: r["algorithms"].__setitem__("knn", {"enabled": "no"}), r"'algorithms\.knn\.enabled'"),
    (lambda r: r["inputs"].__setitem__("photometry", "flux "), r"'inputs\.photometry'"),
    (lambda r: r.__setitem__("relase", "x"), r"'relase' was unexpected"),
    (lambda r: r.pop("training"), r"'training' is a required property"),
    (lambda r: r["columns"].__setitem__("flux", "gaapFlux"), r"'columns\.flux'.*\\\{band"),
    (lambda r: r["partition"].__setitem__("nondetect_val", "99"), r"'partition\.nondetect_val'"),
    (lambda r: r["partition"]["cuts"].__setitem__("require_true", "detect_isPrimary"),
     r"'partition\.cuts\.require_true'.*array"),
    (lambda r: r["estimate"].__setitem__("pdf_bits", 32), r"'estimate\.pdf_bits'.*maximum"),
    (lambda r: r["inputs"].__setitem__("descriptor", {"n_objects": 10}), r"'inputs\.descriptor'"),
], ids=["bands-str", "files-str", "workers-0", "nz-1", "zmax<zmin", "chunk-float",
        "chunk-bool", "enabled-str", "photometry-space", "top-typo", "no-training",
        "template-no-band", "nondetect-str", "require-true-str", "pdf-bits", "descriptor"])
def test_config_wrong_types_and_typos(edit, match):
    raw = _raw_config()
    edit(raw)
    with pytest.raises(PipelineError, match=match):
        validate_config(raw)


def test_typo_in_rail_parameter_is_named():
    from pzpipe import algorithms

    raw = _raw_config()
    raw["algorithms"]["tpz"] = {"inform": {"n_random": 2, "ntrees": 2}}     # ntrees: typo
    cfg = validate_config(raw)
    with pytest.raises(PipelineError, match=r"algorithms\.tpz\.inform.*'ntrees'.*n_trees"):
        algorithms.stage_params(algorithms.get("tpz"), cfg, "inform")


def test_default_config_rail_parameters_exist():
    from pzpipe import algorithms
    from pzpipe.run.config import load_config, enabled_algorithms

    cfg = load_config(REPO / "config" / "config.yaml")
    for name in enabled_algorithms(cfg):
        algo = algorithms.get(name)
        inf, est = algo.classes()
        for kind, cls in (("inform", inf), ("estimate", est)):
            unknown = set(cfg["algorithms"][name][kind]) - set(cls.config_options)
            assert not unknown, f"algorithms.{name}.{kind}: {unknown} are not {cls.__name__} parameters"


@pytest.mark.parametrize("edit, match", [
    (lambda r: r.__setitem__("bands", ["u", "g", "g", "i"]), r"bands"),
    (lambda r: r["columns"].__setitem__("flux", "{band}_{aperture}Flux"), r"columns\.flux"),
], ids=["dup-bands", "template-extra-field"])
def test_config_semantic_errors(edit, match):
    raw = _raw_config()
    edit(raw)
    with pytest.raises(PipelineError, match=match):
        validate_config(raw)


def test_braces_in_input_paths_are_named():
    raw = _raw_config()
    raw["inputs"]["files"] = ["/data/run {band}/part_0.parquet"]
    with pytest.raises(PipelineError, match=r"'inputs\.files\[0\]'.*wildcard"):
        validate_config(raw)


def test_no_rule_uses_a_shell():
    """No user string can reach a shell: every rule runs Python (run:), none has shell:,
    and pzpipe never calls a subprocess with shell=True."""
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        text = smk.read_text()
        assert "shell:" not in text and "os.system" not in text, smk
    for py in (REPO / "workflow" / "src" / "pzpipe").rglob("*.py"):
        text = py.read_text()
        assert "shell=True" not in text and "os.system(" not in text, py


# ----------------------------------------------------------------------------- disk
# The real disk-full cases mount a small tmpfs, which needs root. Without root they skip,
# unless PZPIPE_REQUIRE_ROOT=1 (set by .ci/run, which runs as root): then they FAIL, so a
# CI that should run them cannot silently pass without them.
REQUIRE_ROOT = os.environ.get("PZPIPE_REQUIRE_ROOT") == "1"


def _skip_root(reason: str):
    if REQUIRE_ROOT:
        pytest.fail(f"PZPIPE_REQUIRE_ROOT=1 but {reason}")
    pytest.skip(reason)


def _can_mount() -> bool:
    return os.geteuid() == 0 and sys.platform.startswith("linux")


@contextlib.contextmanager
def _tmpfs(path: Path, size: str, ro: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        _skip_root(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


@pytest.fixture
def unwritable_dir(tmp_path):
    """A directory nobody can write to: chmod 0o500, or a read-only tmpfs for root."""
    d = tmp_path / "ro"
    if os.geteuid() != 0:
        d.mkdir()
        d.chmod(0o500)
        yield d
        d.chmod(0o700)
    elif _can_mount():
        with _tmpfs(d, "1m", ro=True):
            yield d
    else:  # pragma: no cover
        _skip_root("running as root without mount: cannot make an unwritable directory")


@pytest.fixture
def small_input(tmp_path):
    cols = make_flux_table(5000)
    p = write_parquet(tmp_path / "in.parquet", cols)
    cfg = flux_config([p])
    return cfg, make_layout(cfg)


def test_unwritable_output_dir_leaves_nothing(small_input, unwritable_dir):
    cfg, lay = small_input
    with pytest.raises((OSError, PipelineError)):
        run_batch(lay, "b000000", cfg, str(unwritable_dir / "b000000.parquet"))
    with pytest.raises((OSError, PipelineError)):
        run_batch(lay, "b000000", cfg, str(unwritable_dir / "sub" / "b000000.parquet"))
    assert _leftovers(unwritable_dir) == []


def test_disk_full_leaves_no_partial_file(small_input, tmp_path):
    """A real ENOSPC (64 KiB tmpfs) while writing a partition file."""
    if not _can_mount():
        _skip_root("needs root to mount a small tmpfs (the monkeypatched variant runs anyway)")
    cfg, lay = small_input
    with _tmpfs(tmp_path / "full", "64k") as d:
        with pytest.raises((OSError, PipelineError)) as ei:
            run_batch(lay, "b000000", cfg, str(d / "b000000.parquet"))
        assert getattr(ei.value, "errno", None) == errno.ENOSPC or "No space" in str(ei.value)
        assert _leftovers(d) == []


def test_disk_full_simulated_everywhere(small_input, tmp_path, monkeypatch):
    """ENOSPC raised by the final rename of every atomic write: partition, JSON writes."""
    from pzpipe.core import io as pio

    cfg, lay = small_input

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pio.os, "replace", full)
    out = tmp_path / "out"
    with pytest.raises((OSError, PipelineError), match="No space left"):
        run_batch(lay, "b000000", cfg, str(out / "b000000.parquet"))
    with pytest.raises((OSError, PipelineError), match="No space left"):
        pio.write_json_atomic(out / "x.json", {"a": 1})
    assert _leftovers(out) == []


def test_disk_full_message_names_the_file(small_input, tmp_path):
    if not _can_mount():
        _skip_root("needs root to mount a small tmpfs")
    cfg, lay = small_input
    with _tmpfs(tmp_path / "full", "64k") as d:
        with pytest.raises(PipelineError, match=r"b000000\.parquet.*No space left"):
            run_batch(lay, "b000000", cfg, str(d / "b000000.parquet"))


def test_unwritable_message_names_the_dir(small_input, unwritable_dir):
    cfg, lay = small_input
    out = unwritable_dir / "b000000.parquet"
    # pzpipe.core.io.atomic_path's message: the file, the system's reason (in pyarrow's words
    # when pyarrow opened the file), the directory to fix
    with pytest.raises(PipelineError, match=rf"cannot write '{re.escape(str(out))}': "
                       rf".*(Read-only file system|Permission denied).*permissions of "
                       rf"'{re.escape(str(unwritable_dir))}'"):
        run_batch(lay, "b000000", cfg, str(out))


def test_read_errors_inside_a_write_are_not_called_write_errors(tmp_path):
    """Only errors of the output location become "cannot write"; an input that vanished
    while an output was being written keeps its own error and file name."""
    from pzpipe.core.io import atomic_path

    out = tmp_path / "out.parquet"
    with pytest.raises(FileNotFoundError, match="missing_input"):
        with atomic_path(out) as tmp:
            open(tmp, "w").write("partial")
            open(tmp_path / "missing_input.parquet")
    assert not out.exists() and os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- CLI
def _write_cfg(path: Path, files, **over):
    cfg = {"release": "hostile", "inputs": {"hats": None, "files": [str(f) for f in files],
                                            "photometry": "flux"},
           "columns": {"id": "objectId", "ra": "ra", "dec": "dec"},
           "partition": {"chunk_rows": 40}, "batch": {"chunks_per_batch": 2}}
    for k, v in over.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    path.write_text(yaml.safe_dump(cfg))
    return path


def _pzpipe_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("pzpipe")]


def test_cli_missing_column_one_line_and_no_output(tmp_path):
    cols = make_flux_table(60)
    cols["g_gaapFlux"] = cols.pop("g_gaap1p0Flux")
    f = write_parquet(tmp_path / "objects.parquet", cols)
    cf = _write_cfg(tmp_path / "c.yaml", [f])
    wd = tmp_path / "wd"
    r = smk(wd, "results/partition/b000000.parquet", configfile=cf, check=False, timeout=600)
    assert r.returncode != 0
    lines = _pzpipe_lines(r.stderr)
    assert len(lines) == 1, r.stderr[-3000:]
    assert lines[0].startswith("pzpipe error in partition") \
        and "objects.parquet': column 'g_gaap1p0Flux' not found" in lines[0] \
        and "Fix the 'columns' section" in lines[0], lines[0]
    assert _leftovers(wd / "results") == []


@pytest.mark.slow            # snakemake + hats-import: ~60 s on 2 busy cores
def test_cli_duplicate_ids_of_imported_files_name_the_users_files(tmp_path):
    """Through ``snakemake``: the same three objects in two user files imported as HATS
    (rule import_objects), then the partition: one line naming the user's files and rows,
    not the imported catalog's pixel files, and no partition file."""
    ta, tb = make_flux_table(60), make_flux_table(60, seed=1, start_id=1000)
    for k in ta:
        tb[k][5:8] = ta[k][10:13]
    a = write_parquet(tmp_path / "a.parquet", ta)
    b = write_parquet(tmp_path / "b.parquet", tb)
    cf = _write_cfg(tmp_path / "c.yaml", [a, b], partition={"chunk_rows": 1000},
                    batch={"chunks_per_batch": 1000},
                    inputs={"to_hats": {"enabled": True, "pixel_threshold": 20,
                                        "dask": {"threads": 1}}})
    wd = tmp_path / "wd"
    r = smk(wd, "results/partition/b000000.parquet", configfile=cf, check=False, timeout=600)
    assert r.returncode != 0
    assert (wd / "results" / "objects_hats").is_dir()            # the import ran
    lines = _pzpipe_lines(r.stderr)
    assert len(lines) == 1, r.stderr[-3000:]
    assert "3 duplicate value(s) in id column 'objectId'" in lines[0], lines[0]
    for i in (11, 12, 13):
        assert f"id {i} at file '{a}' row {i - 1} and file '{b}' row {i - 6}" in lines[0], lines[0]
    assert "objects_hats" not in lines[0]
    assert _leftovers(wd / "results" / "partition") == []


def test_cli_config_typo_one_line_and_no_output(tmp_path):
    f = write_parquet(tmp_path / "objects.parquet", make_flux_table(60))
    cf = _write_cfg(tmp_path / "c.yaml", [f], partition={"chunk_row": 40})
    wd = tmp_path / "wd"
    r = smk(wd, "-n", configfile=cf, check=False, timeout=600)
    assert r.returncode != 0
    out = r.stdout + r.stderr            # Snakemake 9 prints parse-time errors on stdout
    lines = [ln for ln in out.splitlines() if "config error" in ln]
    assert lines == ["pzpipe: config error at 'partition': Additional properties are not "
                     "allowed ('chunk_row' was unexpected). Check the spelling against "
                     "config/README.md (unknown keys are not allowed)."], out[-3000:]
    assert not (wd / "results").exists()


def test_cli_spaces_and_shell_metacharacters_in_paths(tmp_path):
    """Input file and working directory with spaces, quotes, `;`, `$( )` and backticks:
    the partition runs, and nothing is executed by a shell."""
    canary = f"PWNED-{uuid.uuid4().hex[:6]}"       # created in the cwd if a shell ran it
    evil = f"my data; touch {canary}; $(touch {canary}) `touch {canary}` 'q\" &"
    d = tmp_path / evil
    d.mkdir()
    f = write_parquet(d / f"obj {evil[-6:]}.parquet", make_flux_table(60))
    wd = tmp_path / f"work dir $(touch {canary})"
    cf = _write_cfg(tmp_path / "c f.yaml", [f], columns={"id": "objectId", "ra": "ra", "dec": "dec"})
    r = smk(wd, "results/partition/b000000.parquet", configfile=cf, check=False, timeout=600,
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert pq.ParquetFile(wd / "results" / "partition" / "b000000.parquet").metadata.num_rows == 60
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(canary)]
    assert not Path(canary).exists()


def test_cli_unwritable_results_dir(tmp_path, unwritable_dir):
    """results/ not writable: Snakemake itself cannot create the first job's output
    directory (the HATS import of the coordinates-bearing input) and says so in one line
    naming it; nothing is written."""
    f = write_parquet(tmp_path / "objects.parquet", make_flux_table(60))
    cf = _write_cfg(tmp_path / "c.yaml", [f])
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "results").symlink_to(unwritable_dir)
    r = smk(wd, "results/partition/b000000.parquet", configfile=cf, check=False, timeout=600)
    assert r.returncode != 0
    assert re.search(r"OSError: \[Errno (30|13)\] (Read-only file system|Permission denied): "
                     r"'results/objects_hats'", r.stderr), r.stderr[-3000:]
    assert _leftovers(unwritable_dir) == []



# ----------------------------------------------------------------------------- HATS inputs
@pytest.fixture(scope="module")
def small_hats(tmp_path_factory):
    from pzpipe.planning import synth

    d = tmp_path_factory.mktemp("hats") / "objects"
    synth.write_catalog(d, 300, seed=5, rows_per_pixel=100)
    return d


def _hats_cfg(path, **over):
    from pzpipe.run.config import deep_update

    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw = deep_update(raw, {"inputs": {"hats": str(path)}, "partition": {"chunk_rows": 40}})
    return validate_config(deep_update(raw, over))


def test_hats_path_that_is_not_a_catalog(tmp_path):
    d = tmp_path / "objects"
    d.mkdir()
    write_parquet(d / "part0.parquet", make_flux_table(20))
    with pytest.raises(PipelineError, match=r"inputs\.hats: '.*objects' is not a HATS catalog.*"
                                            r"list them .* under inputs\.files"):
        make_layout(_hats_cfg(d))
    with pytest.raises(PipelineError, match=r"inputs\.hats: '.*nowhere' does not exist"):
        make_layout(_hats_cfg(tmp_path / "nowhere"))


def test_hats_catalog_without_the_configured_columns(small_hats):
    from pzpipe.run.layout import catalog_columns
    from pzpipe.stages.partition import check_catalog_columns

    cfg = _hats_cfg(small_hats, columns={"flux": "{band}_psfFlux", "flux_err": "{band}_psfFluxErr"})
    lay = make_layout(cfg)
    cfg = catalog_columns(cfg, lay)
    assert cfg["columns"]["ra"] == "coord_ra"          # from the catalog's properties
    with pytest.raises(PipelineError, match=r"HATS catalog '.*objects': column 'u_psfFlux' not "
                                            r"found \(12 missing.*Did you mean.*gaap1p0Flux"):
        check_catalog_columns(lay, cfg)


def test_hats_pixel_counts_that_disagree_with_the_files(small_hats, tmp_path):
    """The layout comes from per_partition_statistics.parquet; a pixel file rewritten since
    (here: 10 rows dropped) stops its partition job, naming the file; nothing is written."""
    import shutil

    from pzpipe.run.layout import catalog_columns

    cat = tmp_path / "cat"
    shutil.copytree(small_hats, cat)
    cfg = _hats_cfg(cat)
    lay = make_layout(cfg)
    cfg = catalog_columns(cfg, lay)
    victim = lay.files[1][0]
    pq.write_table(pq.read_table(victim).slice(10), victim)
    b = lay.batch_of_chunk(next(c.index for c in lay.chunks() if c.file == victim))
    out = tmp_path / "out" / "b.parquet"
    with pytest.raises(PipelineError, match=rf"file '{re.escape(victim)}' holds 90 rows but the "
                                            r"layout \(per_partition_statistics\.parquet\) says 100"):
        run_batch(lay, f"b{b:06d}", cfg, str(out))
    assert _leftovers(tmp_path / "out") == []


def test_photometry_directory_with_different_schemas(tmp_path):
    """trainset.photometry.path = a data folder whose files differ: one error naming the
    odd file, before hats-import starts (it would raise a bare KeyError)."""
    from pzpipe.trainset import import_photometry_hats

    d = tmp_path / "phot"
    d.mkdir()
    write_parquet(d / "a.parquet", make_flux_table(20))
    odd = make_flux_table(20, start_id=100)
    odd["coord_ra"] = odd.pop("ra")
    write_parquet(d / "b.parquet", odd)
    with pytest.raises(PipelineError, match=r"trainset\.photometry\.path: file '.*b\.parquet' has "
                                            r"no column\(s\) \['ra'\]"):
        import_photometry_hats(str(d), tmp_path / "out", ra_column="ra", dec_column="dec")
    assert not (tmp_path / "out").exists()


def test_cli_hats_path_not_a_catalog_one_line_and_no_release(tmp_path):
    d = tmp_path / "objects"
    d.mkdir()
    write_parquet(d / "part0.parquet", make_flux_table(20))
    cf = tmp_path / "c.yaml"
    cf.write_text(yaml.safe_dump({"inputs": {"hats": str(d)}}))
    wd = tmp_path / "wd"
    r = smk(wd, "-n", configfile=cf, check=False, timeout=600)   # a dry run logs to stdout
    assert r.returncode != 0
    lines = _pzpipe_lines(r.stdout + r.stderr)
    assert len(lines) == 1 and "is not a HATS catalog" in lines[0], (r.stdout + r.stderr)[-2000:]
    assert not (wd / "results").exists()
