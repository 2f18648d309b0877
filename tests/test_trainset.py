"""Tests of the training-set maker (pzpipe.trainset) on synthetic catalogs built from
the real DC2 photometry (tests/helpers/testdata.py). The whole pipeline runs once per session
(~30-40 s on 2 cores: hats-import, numba compilation of hats' pixel alignment)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pzpipe import PipelineError, trainset as T

from helpers import testdata

SURVEYS = ("SURVA", "SURVB", "SURVC")


# ----------------------------------------------------------------------------- helpers
def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _unit(ra, dec):
    ra, dec = np.radians(ra), np.radians(dec)
    return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def _idkey(s: str):
    return (0, int(s)) if s.isdigit() else (1, s)


def _row(uid, sid, ra, dec, flag=4, instrument="spectroscopic", survey="S1", z=0.5, star=False):
    return {"uid": uid, "survey": survey, "specz_id": sid, "ra": ra, "dec": dec, "redshift": z,
            "z_flag": T.STAR_FLAG if star else flag, "z_flag_raw": str(flag), "instrument": instrument,
            "is_star": star, "source_row": uid}


def _at(ra, dec, dx_arcsec=0.0, dy_arcsec=0.0):
    return (ra + dx_arcsec / 3600 / np.cos(np.radians(dec)), dec + dy_arcsec / 3600)


# ----------------------------------------------------------------------------- fixture
@pytest.fixture(scope="session")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("trainset")
    data = testdata.make_trainset_testdata(base / "data", n_phot=3000, pixel_threshold=300)
    cfg = T.settings({"trainset": data["config"]})
    out = base / "out"
    r = {"base": base, "data": data, "cfg": cfg, "out": out, "truth": data["truth"]}
    r["compile"] = T.compile_specz(cfg["specz"]["catalogs"], out / "specz_compiled.parquet",
                                   out / "specz_compiled.json", zmax=cfg["specz"]["zmax"],
                                   log=out / "logs" / "compile.log")
    r["dedup"] = T.dedup_specz(out / "specz_compiled.parquet", out / "specz_dedup.parquet",
                               out / "specz_dedup.json", radius_arcsec=cfg["dedup"]["radius_arcsec"])
    p = cfg["photometry"]
    # margin_order=10 (a 129" margin of whole pixels) plans in ~7 s instead of ~15 s
    T.import_photometry_hats(p["path"], out / "photometry_hats", ra_column=p["ra_column"],
                             dec_column=p["dec_column"], pixel_threshold=p["pixel_threshold"],
                             highest_order=7, margin_arcsec=p["margin_arcsec"], margin_order=10,
                             threads=2, mem_mb=4000, log=out / "logs" / "import.log")
    x = cfg["crossmatch"]
    r["xmatch"] = T.crossmatch_specz(out / "specz_dedup.parquet", out / "photometry_hats",
                                     out / "matched.parquet", out / "matched.json",
                                     id_column=p["id_column"], radius_arcsec=x["radius_arcsec"],
                                     min_flag=x["min_flag"], threads=1, mem_mb=2000)
    s = cfg["split"]
    r["split"] = T.split_trainset(out / "matched.parquet", out / "split", train_fraction=s["train_fraction"],
                                  seed=s["seed"], threads=1, mem_mb=2000)
    r["phot"] = pd.concat([pd.read_parquet(f) for f in data["photometry"]], ignore_index=True)
    return r


# ======================================================================== compilation
def test_bad_rows_counted_per_catalog_and_reason(run):
    rep = run["compile"]
    truth = run["truth"]
    assert [c["survey"] for c in rep["catalogs"]] == list(SURVEYS)
    for c in rep["catalogs"]:
        expected = {k: truth["rejected"][c["survey"]].get(k, 0) for k in T.REJECT_REASONS}
        assert c["rejected"] == expected, c["survey"]
        assert c["rows_in"] == truth["rows"][c["survey"]]
        assert c["rows_out"] + sum(c["rejected"].values()) == c["rows_in"]
        assert len(c["sha256"]) == 64
    df = pd.read_parquet(run["out"] / "specz_compiled.parquet")
    assert len(df) == rep["total"]["rows_out"]
    assert df["ra"].between(0, 360).all() and df["dec"].between(-90, 90).all()
    assert df["redshift"].between(0, 3.0).all() and df["specz_id"].notna().all()
    assert set(df["z_flag"]) <= {0, 1, 2, 3, 4, T.STAR_FLAG}
    assert df["is_star"].sum() == truth["stars"] == rep["total"]["stars"]
    assert (df["uid"] == np.arange(len(df))).all()
    # the report on disk is the returned one
    assert json.loads((run["out"] / "specz_compiled.json").read_text())["total"] == rep["total"]
    assert "rejected 2 rows: ra_nan" in (run["out"] / "logs" / "compile.log").read_text()


def test_flag_and_instrument_mapping():
    df = pd.DataFrame({"i": [1, 2, 3, 4, 5, 6, 7], "r": [10.0] * 7, "d": [0.0] * 7,
                       "z": [0.1, 0.2, 0.3, 0.0, 0.5, 0.6, 0.7],
                       "f": ["4.0", "3", "1.5", "6", " 2 ", "7", None],
                       "t": ["SPEC", "grism", "Phot", "spec", "spec", "spec", "spec"]})
    cat = {"survey": "X", "path": "x.csv", "columns": {"id": "i", "ra": "r", "dec": "d", "z": "z", "flag": "f"},
           "flag_map": {4: 4, 3.0: 3, "1.5": 1, 6: "star", 2: 2},
           "instrument_column": "t",
           "instrument_map": {"SPEC": "spectroscopic", "spec": "spectroscopic", "grism": "grism",
                              "Phot": "photometric"}}
    out, rep = T.homogenise_catalog(df, cat, zmax=3.0)
    assert out["z_flag"].tolist() == [4, 3, 1, T.STAR_FLAG, 2]
    assert out["is_star"].tolist() == [False, False, False, True, False]
    assert out["instrument"].tolist() == ["spectroscopic", "grism", "photometric", "spectroscopic",
                                          "spectroscopic"]
    assert rep["rejected"]["flag_unmapped"] == 2 and rep["rows_out"] == 5
    # no map: flags must already be on the homogenised scale; fixed instrument
    cat2 = {"survey": "Y", "path": "y", "columns": {"id": "i", "ra": "r", "dec": "d", "z": "z", "flag": "f"},
            "instrument": "grism"}
    out2, rep2 = T.homogenise_catalog(df.assign(f=[4, 3, 9, 6, 2, 0, np.nan]), cat2)
    assert out2["z_flag"].tolist() == [4, 3, T.STAR_FLAG, 2, 0]
    assert rep2["rejected"]["flag_unmapped"] == 2
    # fixed flag, no flag column; RA 360 wraps to 0; float ids lose ".0"
    cat3 = {"survey": "Z", "path": "z", "columns": {"id": "i", "ra": "r", "dec": "d", "z": "z"},
            "flag_value": 3, "instrument": "spectroscopic"}
    out3, _ = T.homogenise_catalog(df.assign(r=360.0, i=df["i"].astype(float)), cat3)
    assert (out3["z_flag"] == 3).all() and (out3["ra"] == 0).all()
    assert out3["specz_id"].tolist()[:2] == ["1", "2"]
    with pytest.raises(PipelineError):
        T.homogenise_catalog(df, {**cat3, "flag_value": 5})
    with pytest.raises(PipelineError):
        T.homogenise_catalog(df, {**cat3, "instrument": "radio"})


def test_first_reason_counted_and_all_reasons_recorded():
    df = pd.DataFrame({"i": ["a", "b", "c"], "r": [np.nan, 10.0, 10.0], "d": [95.0, 0.0, 0.0],
                       "z": [-1.0, 4.0, 1.0], "f": [4, 4, 4]})
    cat = {"survey": "X", "path": "x", "columns": {"id": "i", "ra": "r", "dec": "d", "z": "z", "flag": "f"},
           "instrument": "spectroscopic"}
    out, rep = T.homogenise_catalog(df, cat, zmax=3.0)
    assert len(out) == 1
    assert rep["rejected"]["ra_nan"] == 1 and rep["rejected"]["z_above_zmax"] == 1
    assert rep["rejected"]["dec_range"] == 0 and rep["rejected_any"]["dec_range"] == 1
    assert rep["rejected_any"]["z_negative"] == 1


# ======================================================================= deduplication
def test_dedup_flag_wins():
    ra, dec = 50.0, -30.0
    df = pd.DataFrame([_row(0, "1", ra, dec, flag=3), _row(1, "2", *_at(ra, dec, 0.3), flag=4, survey="S2")])
    out = T.deduplicate(df)
    assert out["dedup_status"].tolist() == ["dropped", "kept"]
    assert out["dedup_rule"].tolist() == ["flag", "flag"]
    assert (out["dedup_kept_uid"] == 1).all() and (out["dedup_n"] == 2).all()
    assert (out["dedup_group"] == 0).all()


def test_dedup_instrument_priority_beats_id():
    ra, dec = 50.0, -30.0
    rows = [_row(0, "1", ra, dec, instrument="photometric"), _row(1, "2", *_at(ra, dec, 0.2), instrument="grism"),
            _row(2, "3", *_at(ra, dec, -0.2), instrument="spectroscopic")]
    out = T.deduplicate(pd.DataFrame(rows))
    assert out["dedup_status"].tolist() == ["dropped", "dropped", "kept"]
    assert set(out["dedup_rule"]) == {"instrument"}
    # a custom priority reverses it
    out2 = T.deduplicate(pd.DataFrame(rows), instrument_priority=["photometric", "grism", "spectroscopic"])
    assert out2["dedup_status"].tolist() == ["kept", "dropped", "dropped"]


def test_dedup_lowest_id_is_a_tie():
    ra, dec = 50.0, -30.0
    rows = [_row(0, "10", ra, dec), _row(1, "9", *_at(ra, dec, 0.3), survey="S2"),
            _row(2, "B001", *_at(ra, dec, 0, 0.3), survey="S3")]
    out = T.deduplicate(pd.DataFrame(rows))
    # digit ids compare as integers (9 < 10) and come before other ids
    assert out["dedup_status"].tolist() == ["dropped", "tie", "dropped"]
    assert set(out["dedup_rule"]) == {"id"}
    # flag decides before id: a worse flag on the low id loses, and the win is no tie
    rows[1]["z_flag"] = 3
    out = T.deduplicate(pd.DataFrame(rows))
    assert out["dedup_status"].tolist() == ["tie", "dropped", "dropped"]  # "10" vs "B001": still a tie
    rows[2]["z_flag"] = 2
    out = T.deduplicate(pd.DataFrame(rows))
    assert out["dedup_status"].tolist() == ["kept", "dropped", "dropped"]
    assert set(out["dedup_rule"]) == {"flag"}
    # huge integer ids compare exactly (no float rounding)
    rows = [_row(0, "900719925474099311", ra, dec), _row(1, "900719925474099310", *_at(ra, dec, 0.3))]
    assert T.deduplicate(pd.DataFrame(rows))["dedup_status"].tolist() == ["dropped", "tie"]
    # same id in two surveys: the uid (catalog order) decides
    rows = [_row(0, "5", ra, dec, survey="S1"), _row(1, "5", *_at(ra, dec, 0.3), survey="S2")]
    assert T.deduplicate(pd.DataFrame(rows))["dedup_status"].tolist() == ["tie", "dropped"]


def test_dedup_star_rank_groups_and_determinism():
    ra, dec = 50.0, -30.0
    rows = [_row(0, "1", ra, dec, flag=3), _row(1, "2", *_at(ra, dec, 0.3), star=True),
            # a chain: 0.4" steps, ends 0.8" apart -> one group of three
            _row(2, "3", 60.0, 10.0), _row(3, "4", *_at(60.0, 10.0, 0.4)), _row(4, "5", *_at(60.0, 10.0, 0.8)),
            # 0.6" apart: two singletons
            _row(5, "6", 70.0, 20.0), _row(6, "7", *_at(70.0, 20.0, 0.6))]
    out = T.deduplicate(pd.DataFrame(rows))
    assert out["dedup_status"].tolist()[:2] == ["dropped", "kept"]  # star counts as flag 4
    out_low = T.deduplicate(pd.DataFrame(rows), star_rank=2)
    assert out_low["dedup_status"].tolist()[:2] == ["kept", "dropped"]
    assert out["dedup_n"].tolist() == [2, 2, 3, 3, 3, 1, 1]
    assert out["dedup_status"].tolist()[2:] == ["tie", "dropped", "dropped", "kept", "kept"]
    assert out["dedup_rule"].tolist()[5:] == ["single", "single"]
    # row order does not matter
    shuffled = pd.DataFrame(rows).sample(frac=1, random_state=3)
    out2 = T.deduplicate(shuffled).sort_values("uid").reset_index(drop=True)
    pd.testing.assert_frame_equal(out.reset_index(drop=True), out2, check_dtype=False)


def test_dedup_groups_equal_brute_force(run):
    df = pd.read_parquet(run["out"] / "specz_dedup.parquet")
    n = len(df)
    xyz = _unit(df["ra"].to_numpy(), df["dec"].to_numpy())
    cosr = np.cos(np.radians(0.5 / 3600))
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    dots = xyz @ xyz.T
    ii, jj = np.nonzero(np.triu(dots >= cosr, 1))
    for a, b in zip(ii, jj, strict=True):
        parent[find(a)] = find(b)
    roots = np.array([find(a) for a in range(n)])
    # same partition of the rows
    ours = df["dedup_group"].to_numpy()
    assert len(set(zip(roots, ours, strict=True))) == len(set(roots)) == len(set(ours))
    # one winner per group, its uid recorded on every member
    g = df.groupby("dedup_group")
    assert (g["dedup_status"].agg(lambda s: (s != "dropped").sum()) == 1).all()
    winners = df[df["dedup_status"] != "dropped"].set_index("dedup_group")["uid"]
    assert (df["dedup_kept_uid"].to_numpy() == winners.loc[df["dedup_group"]].to_numpy()).all()
    # the winner is the best by (flag, instrument, id, uid) - independent check
    prio = {k: i for i, k in enumerate(T.INSTRUMENTS)}
    for _, grp in g:
        if len(grp) == 1:
            continue
        best = min(grp.itertuples(), key=lambda r: (-(4 if r.is_star else r.z_flag), prio[r.instrument],
                                                    _idkey(r.specz_id), r.uid))
        assert best.uid == grp["dedup_kept_uid"].iloc[0]
    # the report counts per survey add up
    rep = run["dedup"]
    for s in SURVEYS:
        c = rep["surveys"][s]
        assert c["kept"] + c["tie"] + c["dropped"] == c["rows"] == (df["survey"] == s).sum()
        assert c["dropped"] == sum(c["dropped_for"].values())
    assert rep["status"]["tie"] > 0 and rep["groups"]["by_rule"]["instrument"] > 0
    assert rep["groups"]["by_rule"]["flag"] > 0 and rep["groups"]["z_conflict"] > 0
    # cross-survey duplicates (jitter < 0.2" each) always end in one group
    assert rep["groups"]["by_size"].get("3", 0) > 0


# ========================================================================= crossmatch
def _brute_force_matches(run):
    """(specz_uid, phot_id, dist) of the nearest photometric object within 1" of each
    spec-z row that the crossmatch uses, by an all-pairs computation."""
    sz = pd.read_parquet(run["out"] / "specz_dedup.parquet")
    use = (sz["dedup_status"] != "dropped") & ~sz["is_star"] & (sz["z_flag"] >= 3)
    sz = sz[use].reset_index(drop=True)
    phot = run["phot"]
    a = _unit(sz["ra"].to_numpy(), sz["dec"].to_numpy())
    b = _unit(phot["ra"].to_numpy(), phot["dec"].to_numpy())
    chord = np.sqrt(np.maximum(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), 0))
    dist = np.degrees(2 * np.arcsin(chord / 2)) * 3600
    j = dist.argmin(axis=1)
    d = dist[np.arange(len(sz)), j]
    ok = d <= 1.0
    return sz[ok].assign(phot_id=phot["id"].to_numpy()[j[ok]], dist=d[ok])


def test_crossmatch_equals_brute_force(run):
    bf = _brute_force_matches(run)
    out = pd.read_parquet(run["out"] / "matched.parquet")
    rep = run["xmatch"]
    assert rep["matches_raw"] == len(bf)
    assert out["id"].is_unique and (out["id"].diff().dropna() > 0).all()
    # same photometric objects, each matched by the same number of spec-z rows
    counts = bf.groupby("phot_id").size()
    assert set(out["id"]) == set(counts.index)
    assert (out.set_index("id")["n_specz_matches"].sort_index().to_numpy() == counts.sort_index().to_numpy()).all()
    # the kept spec-z row per object: best flag, then distance, then id (independent)
    for pid, grp in bf.groupby("phot_id"):
        best = min(grp.itertuples(), key=lambda r: (-r.z_flag, r.dist, _idkey(r.specz_id), r.uid))
        row = out[out["id"] == pid].iloc[0]
        assert row["specz_uid"] == best.uid
        assert abs(row["_dist_arcsec"] - best.dist) < 1e-6
        assert row["redshift"] == best.redshift and row["survey"] == best.survey
    # columns: photometry first, then the spec-z columns
    phot_cols = list(run["phot"].columns)
    assert list(out.columns[:len(phot_cols)]) == phot_cols
    for c in ("redshift", "z_flag", "survey", "_dist_arcsec", "specz_id"):
        assert c in out.columns
    # photometry carried over unchanged
    ph = run["phot"].set_index("id").loc[out["id"]]
    assert np.allclose(ph["mag_i_lsst"].to_numpy(), out["mag_i_lsst"].to_numpy())
    assert np.allclose(ph["ra"].to_numpy(), out["ra"].to_numpy())


def test_edge_objects_found_across_partitions(run):
    """The edge pairs straddle partition boundaries of the imported catalog, and all
    are matched; without the margin cache some are lost."""
    import hats
    import lsdb

    cat = hats.read_hats(run["out"] / "photometry_hats" / "photometry")
    pixels = {(p.order, p.pixel) for p in cat.get_healpix_pixels()}
    orders = sorted({o for o, _ in pixels})
    assert len(pixels) >= 10

    def partition(ra, dec):
        for o in orders:
            pix = int(testdata.healpix_pixel(ra, dec, o)[0])
            if (o, pix) in pixels:
                return (o, pix)
        return None

    sz = pd.read_parquet(run["out"] / "specz_compiled.parquet").set_index(["survey", "specz_id"])
    phot = run["phot"].set_index("id")
    out = pd.read_parquet(run["out"] / "matched.parquet").set_index("specz_uid")
    straddle = 0
    for survey, sid, pid in run["truth"]["edge_pairs"]:
        s = sz.loc[(survey, sid)]
        p = phot.loc[pid]
        straddle += partition(s["ra"], s["dec"]) != partition(p["ra"], p["dec"])
        assert out.loc[s["uid"], "id"] == pid  # matched to its photometric object
    print("edge pairs straddling partitions:", straddle, "of", len(run["truth"]["edge_pairs"]))
    assert straddle >= 20, straddle
    # sensitivity: the same crossmatch without a right margin misses edge pairs
    left = pd.read_parquet(run["out"] / "matched.parquet")[["specz_uid", "specz_ra", "specz_dec"]]
    scat = lsdb.from_dataframe(left, ra_column="specz_ra", dec_column="specz_dec", margin_threshold=None)
    nomargin = lsdb.open_catalog(run["out"] / "photometry_hats" / "photometry")
    assert nomargin.margin is None
    with pytest.warns(Warning):
        xm = scat.crossmatch(nomargin, n_neighbors=1, radius_arcsec=1.0, suffix_method="overlapping_columns",
                             log_changes=False).compute(progress_bar=False)
    print("matches without margin:", len(xm), "of", len(left))
    assert len(left) - len(xm) >= 20
    # and crossmatch_specz refuses a catalog without margin
    with pytest.raises(PipelineError, match="margin"):
        T.crossmatch_specz(run["out"] / "specz_dedup.parquet", run["out"] / "photometry_hats" / "photometry",
                           run["base"] / "x.parquet", run["base"] / "x.json")


def test_multimatch_resolution_in_pipeline(run):
    out = pd.read_parquet(run["out"] / "matched.parquet").set_index("id")
    for m in run["truth"]["multi"]:
        row = out.loc[m["phot_id"]]
        assert row["n_specz_matches"] == 2
        assert [row["survey"], row["specz_id"]] == m["winner"], m
    assert run["xmatch"]["objects_multimatched"] >= len(run["truth"]["multi"])
    # blends: the spec-z row goes to the nearer of two photometric objects 0.7" apart
    for near, far in run["truth"]["blends"]:
        assert near in out.index and far not in out.index
        assert out.loc[near, "_dist_arcsec"] < 0.4


def test_resolve_multimatches_rules():
    base = {"redshift": 0.5, "survey": "S", "specz_instrument": "spectroscopic", "specz_is_star": False}
    m = pd.DataFrame([
        # object 1: flag beats distance
        {"id": 1, "specz_uid": 0, "specz_id": "1", "z_flag": 3, "_dist_arcsec": 0.1},
        {"id": 1, "specz_uid": 1, "specz_id": "2", "z_flag": 4, "_dist_arcsec": 0.9},
        # object 2: same flag, distance decides
        {"id": 2, "specz_uid": 2, "specz_id": "1", "z_flag": 4, "_dist_arcsec": 0.5},
        {"id": 2, "specz_uid": 3, "specz_id": "0", "z_flag": 4, "_dist_arcsec": 0.2},
        # object 3: same flag and distance, lowest id (numeric) decides
        {"id": 3, "specz_uid": 4, "specz_id": "10", "z_flag": 4, "_dist_arcsec": 0.3},
        {"id": 3, "specz_uid": 5, "specz_id": "9", "z_flag": 4, "_dist_arcsec": 0.3},
        {"id": 3, "specz_uid": 6, "specz_id": "A1", "z_flag": 4, "_dist_arcsec": 0.3},
        # object 4: alone
        {"id": 4, "specz_uid": 7, "specz_id": "7", "z_flag": 3, "_dist_arcsec": 0.7},
    ]).assign(**base)
    out = T.resolve_multimatches(m.sample(frac=1, random_state=1), "id")
    assert out["id"].tolist() == [1, 2, 3, 4]
    assert out["specz_uid"].tolist() == [1, 3, 5, 7]
    assert out["n_specz_matches"].tolist() == [2, 2, 3, 1]


def test_crossmatch_renames_colliding_columns_and_counts_exclusions(tmp_path):
    import lsdb

    rng = np.random.default_rng(5)
    n = 200
    phot = pd.DataFrame({"objectId": np.arange(1000, 1000 + n), "coord_ra": rng.uniform(150, 150.2, n),
                         "coord_dec": rng.uniform(2, 2.2, n), "redshift": rng.uniform(0, 1, n),
                         "i_gaap1p0Flux": rng.uniform(100, 10000, n)})
    cat = lsdb.from_dataframe(phot, ra_column="coord_ra", dec_column="coord_dec", catalog_name="rubin",
                              margin_threshold=5.0)
    cat.write_catalog(tmp_path / "rubin", progress_bar=False)
    assert T.is_hats(tmp_path / "rubin") and not T.is_hats(tmp_path)
    rows = [_row(k, str(k), *_at(r.coord_ra, r.coord_dec, 0.2), flag=[4, 3, 2][k % 3])
            for k, r in enumerate(phot.itertuples())]
    rows[0]["is_star"], rows[0]["z_flag"] = True, T.STAR_FLAG
    sz = T.deduplicate(pd.DataFrame(rows))
    sz.to_parquet(tmp_path / "dedup.parquet")
    rep = T.crossmatch_specz(tmp_path / "dedup.parquet", tmp_path / "rubin", tmp_path / "m.parquet",
                             tmp_path / "m.json", id_column="objectId", min_flag=3)
    out = pd.read_parquet(tmp_path / "m.parquet")
    assert "redshift_phot" in out.columns and rep["photometry"]["renamed_columns"] == {"redshift": "redshift_phot"}
    assert rep["excluded"] == {"dedup_dropped": 0, "star": 1, "flag_below_min": sum(k % 3 == 2 for k in range(1, n))}
    assert len(out) == rep["specz_used"] == n - rep["excluded"]["star"] - rep["excluded"]["flag_below_min"]
    assert (out["redshift"] == 0.5).all() and np.allclose(out["_dist_arcsec"], 0.2, atol=1e-6)
    # split works on Rubin-style columns (flux -> magnitude in the plot, HATS with coord_ra)
    summ = T.split_trainset(tmp_path / "m.parquet", tmp_path / "split", seed=1, write_hats=True)
    assert summ["train"]["rows"] + summ["test"]["rows"] == len(out)
    hats_train = lsdb.open_catalog(tmp_path / "split" / "train_hats").compute(progress_bar=False)
    assert sorted(hats_train["objectId"]) == sorted(pd.read_parquet(tmp_path / "split" / "train.parquet")["objectId"])


# ============================================================================== split
def test_split_outputs(run):
    out = run["out"] / "split"
    matched = pd.read_parquet(run["out"] / "matched.parquet")
    train = pd.read_parquet(out / "train.parquet")
    test = pd.read_parquet(out / "test.parquet")
    assert list(train.columns) == list(matched.columns) == list(test.columns)
    assert set(train["id"]).isdisjoint(test["id"])
    assert sorted(pd.concat([train, test])["id"]) == sorted(matched["id"])
    assert len(train) == int(np.floor(0.7 * len(matched) + 0.5))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train"]["rows"] == len(train) and summary["test"]["rows"] == len(test)
    assert sum(summary["train"]["survey"].values()) == len(train)
    png = (out / "split.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["inputs"][0]["sha256"] == _sha(run["out"] / "matched.parquet")
    assert prov["outputs"]["train"] == _sha(out / "train.parquet")
    assert prov["versions"]["lsdb"] and prov["versions"]["hats-import"]
    assert prov["parameters"]["seed"] == 42
    # the chain reaches back to the spec-z catalogs' sha256
    chain = prov["upstream"][0]
    while chain.get("upstream"):
        chain = chain["upstream"][0]
    assert chain["stage"] == "specz_compile" and len(chain["inputs"]) == 3
    # HATS copies hold the same rows
    import lsdb

    for name, df in (("train", train), ("test", test)):
        h = lsdb.open_catalog(out / f"{name}_hats").compute(progress_bar=False)
        assert sorted(h["id"]) == sorted(df["id"])


def test_split_determinism(run, tmp_path):
    matched = run["out"] / "matched.parquet"
    a = T.split_trainset(matched, tmp_path / "a", seed=42, write_hats=False)
    b = T.split_trainset(matched, tmp_path / "b", seed=42, write_hats=False)
    c = T.split_trainset(matched, tmp_path / "c", seed=43, write_hats=False)
    for name in ("train", "test"):
        assert _sha(tmp_path / "a" / f"{name}.parquet") == _sha(tmp_path / "b" / f"{name}.parquet")
        assert _sha(tmp_path / "a" / f"{name}.parquet") == _sha(run["out"] / "split" / f"{name}.parquet")
        assert _sha(tmp_path / "a" / f"{name}.parquet") != _sha(tmp_path / "c" / f"{name}.parquet")
    assert a["train"] == b["train"] and a["test"] == b["test"]
    assert c["train"]["rows"] == a["train"]["rows"]


def test_split_stratified(run):
    z = pd.read_parquet(run["out"] / "matched.parquet")["redshift"].to_numpy()
    is_train = T.split_indices(z, train_fraction=0.6, seed=7, stratify_zbins=5)
    edges = np.quantile(z, np.linspace(0, 1, 6))
    bins = np.clip(np.searchsorted(edges, z, side="right") - 1, 0, 4)
    for b in range(5):
        m = bins == b
        assert is_train[m].sum() == int(np.floor(0.6 * m.sum() + 0.5))
    is_train2 = T.split_indices(z, train_fraction=0.6, seed=7, stratify_zbins=[0.0, 0.5, 1.0, 3.0])
    for lo, hi in ((0.0, 0.5), (0.5, 1.0), (1.0, 3.1)):
        m = (z >= lo) & (z < hi)
        assert is_train2[m].sum() == int(np.floor(0.6 * m.sum() + 0.5))
    assert (T.split_indices(z, seed=7) == T.split_indices(z, seed=7)).all()
    assert not (T.split_indices(z, seed=7) == T.split_indices(z, seed=8)).all()


# ============================================================================== config
def test_settings_defaults_and_merge():
    s = T.settings({"trainset": {"split": {"seed": 1}, "crossmatch": {"radius_arcsec": 2.0}}})
    assert s["split"]["seed"] == 1 and s["split"]["train_fraction"] == 0.7
    assert s["crossmatch"] == {"radius_arcsec": 2.0, "min_flag": 3, "keep_stars": False}
    assert s["dedup"]["radius_arcsec"] == 0.5 and s["dedup"]["instrument_priority"] == list(T.INSTRUMENTS)
    assert T.settings({}) == T.DEFAULTS


def test_schema_trainset_defaults_equal_DEFAULTS(run):
    import jsonschema
    import yaml

    from pzpipe.run.config import _fill_defaults

    from pzpipe.run.config import SCHEMA_PATH

    full = yaml.safe_load(SCHEMA_PATH.read_text())
    schema = {"definitions": full["definitions"], "type": "object",
              "properties": {"trainset": full["properties"]["trainset"]}}
    filled = _fill_defaults({}, schema, schema)
    assert filled["trainset"] == T.DEFAULTS
    cfg = {"trainset": {**run["data"]["config"], "enabled": True}}
    jsonschema.validate(cfg, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"trainset": {"split": {"sed": 1}}}, schema)
    bad_cat = dict(run["data"]["config"]["specz"]["catalogs"][0], instrument_column="x")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"trainset": {"specz": {"catalogs": [bad_cat]}}}, schema)


def test_train_file_readable_by_main_pipeline(run):
    """train.parquet works as `training.file` with the default DC2 column config."""
    from pzpipe.run.config import load_config
    from pzpipe.stages.samples import read_sample

    cfg = load_config(Path(__file__).parents[1] / "config" / "config.yaml")
    # the default config's training section (DC2 columns: AB magnitudes, id column 'id')
    sample = read_sample(cfg, {**cfg["training"], "file": str(run["out"] / "split" / "train.parquet"),
                               "redshift": "redshift"})
    train = pd.read_parquet(run["out"] / "split" / "train.parquet")
    assert len(sample["redshift"]) == len(train)
    assert np.allclose(sample["redshift"], train["redshift"])


def test_crossmatch_at_footprint_edge(tmp_path):
    """Spec-z rows just outside the photometric footprint (in sky with no photometric
    partition), 0.5" from an object just inside, are matched (LSDB aligns with the
    margin's coverage too)."""
    import lsdb

    rng = np.random.default_rng(11)
    order, n = 6, 30
    pix = int(testdata.healpix_pixel(67.5, -30.5, order)[0])
    ra, dec = rng.uniform(66.5, 68.5, 60000), rng.uniform(-31.5, -29.5, 60000)
    inside = testdata.healpix_pixel(ra, dec, order) == pix
    a_ra, a_dec = ra[inside][:n], dec[inside][:n]
    ang = rng.uniform(0, 2 * np.pi, 400)
    b_ra = np.repeat(a_ra, 400 // n + 1)[:400] + 0.8 * np.cos(ang) / np.cos(np.radians(-30.5))
    b_dec = np.repeat(a_dec, 400 // n + 1)[:400] + 0.8 * np.sin(ang)
    a_ra, a_dec = np.repeat(a_ra, 400 // n + 1)[:400], np.repeat(a_dec, 400 // n + 1)[:400]
    out = testdata.healpix_pixel(b_ra, b_dec, order) != pix
    a_ra, a_dec, b_ra, b_dec = a_ra[out][:n], a_dec[out][:n], b_ra[out][:n], b_dec[out][:n]
    lo, hi = np.zeros(n), np.ones(n)  # bisect every segment to the pixel boundary
    for _ in range(45):
        mid = (lo + hi) / 2
        ins = testdata.healpix_pixel(a_ra + mid * (b_ra - a_ra), a_dec + mid * (b_dec - a_dec), order) == pix
        lo, hi = np.where(ins, mid, lo), np.where(ins, hi, mid)
    seg = testdata.angular_sep_arcsec(a_ra, a_dec, b_ra, b_dec)
    t_in, t_out = lo - 0.25 / seg, lo + 0.25 / seg
    p_ra, p_dec = a_ra + t_in * (b_ra - a_ra), a_dec + t_in * (b_dec - a_dec)
    s_ra, s_dec = a_ra + t_out * (b_ra - a_ra), a_dec + t_out * (b_dec - a_dec)
    assert (testdata.healpix_pixel(s_ra, s_dec, order) != pix).all()
    bg = ra[inside][n:1500]
    phot = pd.DataFrame({"id": np.arange(n + len(bg)), "ra": np.r_[p_ra, bg],
                         "dec": np.r_[p_dec, dec[inside][n:1500]]})
    lsdb.from_dataframe(phot, ra_column="ra", dec_column="dec", margin_threshold=5.0, partition_rows=300,
                        highest_order=9).write_catalog(tmp_path / "phot", progress_bar=False)
    sz = T.deduplicate(pd.DataFrame([_row(k, str(k), r, d) for k, (r, d) in enumerate(zip(s_ra, s_dec, strict=True))]))
    sz.to_parquet(tmp_path / "dedup.parquet")
    cat = lsdb.open_catalog(tmp_path / "phot")
    assert cat.npartitions > 1 and all(p.order > order for p in cat.get_healpix_pixels())
    rep = T.crossmatch_specz(tmp_path / "dedup.parquet", tmp_path / "phot", tmp_path / "m.parquet",
                             tmp_path / "m.json")
    m = pd.read_parquet(tmp_path / "m.parquet")
    assert rep["matches_raw"] == n and sorted(m["id"]) == list(range(n))
    assert np.allclose(m["_dist_arcsec"], 0.5, atol=2e-3)
