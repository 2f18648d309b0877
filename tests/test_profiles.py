"""Lint of the Snakemake profiles: known options, known rules, valid resource expressions,
partitions that exist at the site, job sizes from the one table (pzpipe.planning.resources.JOBS) and
never from a profile, and a dry run through each Slurm profile."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROFILES = ["local", "apollo", "sdumont", "ci-slurm", "htcondor"]
SITE_PARTITIONS = {
    "apollo": {"cpu_dev", "cpu_small", "cpu", "cpu_long", "cpu_bpglsst"},
    "sdumont": {"sequana_cpu", "sequana_cpu_long", "sequana_cpu_dev", "sequana_cpu_bigmem"},
    "ci-slurm": {"cpu", "cpu_dev"},          # .ci/setup_slurm.sh
}
# Options of plugins that are not installed here (checked against their documentation).
FOREIGN_PREFIXES = ("htcondor-",)
# The only job sizes a profile may set (pzpipe.planning.resources.JOBS is the one source; a profile's
# set-resources would silently win over it). Each is documented in the profile.
PROFILE_OVERRIDES = {
    # the one-node test Slurm (.ci/setup_slurm.sh): a retry must fit its RealMemory
    ("ci-slurm", "train", "mem_mb"): "3000 * attempt",
}


def _profile(name: str) -> dict:
    return yaml.safe_load((REPO / "profiles" / name / "config.yaml").read_text())


def _snakemake_options() -> set[str]:
    from snakemake.cli import get_argument_parser

    opts = set()
    for action in get_argument_parser()._actions:
        opts.update(o[2:] for o in action.option_strings if o.startswith("--"))
    return opts


def _workflow_rules() -> set[str]:
    rules = set()
    for f in [REPO / "workflow" / "Snakefile", *(REPO / "workflow" / "rules").glob("*.smk")]:
        rules.update(re.findall(r"^rule (\w+):", f.read_text(), re.M))
    return rules


@pytest.mark.parametrize("name", PROFILES)
def test_profile_keys_are_snakemake_options(name):
    prof = _profile(name)
    known = _snakemake_options()
    unknown = [k for k in prof if k not in known and not k.startswith(FOREIGN_PREFIXES)]
    assert not unknown, f"profiles/{name}: unknown options {unknown}"


@pytest.mark.parametrize("name", PROFILES)
def test_profile_rules_exist(name):
    prof = _profile(name)
    rules = _workflow_rules()
    named = set(prof.get("set-resources", {}) or {}) | set(prof.get("set-threads", {}) or {})
    assert named <= rules, f"profiles/{name}: no such rule(s) {sorted(named - rules)}"


def _eval(value, attempt, threads=4):
    if isinstance(value, (int, float, bool)):
        return value
    ns = {"attempt": attempt, "threads": threads, "input": [],
          "wildcards": SimpleNamespace(algo="fzboost", batch="b000000")}
    try:
        return eval(value, ns)  # noqa: S307 - same evaluation Snakemake does
    except (NameError, SyntaxError):
        return value           # plain string (Snakemake's rule too)


@pytest.mark.parametrize("name", PROFILES)
def test_resource_values_evaluate_and_grow_with_attempt(name):
    prof = _profile(name)
    blocks = [prof.get("default-resources", {}) or {}, *(prof.get("set-resources", {}) or {}).values()]
    for block in blocks:
        for key, val in block.items():
            v1, v3 = _eval(val, 1), _eval(val, 3)
            if key in ("mem_mb", "runtime", "request_memory", "cpus_per_task"):
                assert isinstance(v1, int) and v1 > 0, (name, key, val)
                if isinstance(val, str) and "attempt" in val:
                    assert v3 > v1, (name, key, val)
    parts = SITE_PARTITIONS.get(name)
    if parts:
        used = {_eval(b["slurm_partition"], 1) for b in blocks if "slurm_partition" in b}
        assert used <= parts, f"profiles/{name}: unknown partitions {used - parts}"


@pytest.mark.parametrize("name", ["apollo", "sdumont"])
def test_site_overlay_partitions_exist(name):
    cfg = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
    names = {p["name"] for p in cfg.get("sizing", {}).get("partitions", [])}
    assert names and names <= SITE_PARTITIONS[name]


def test_array_mode_only_with_enough_jobs():
    # plugin 2.8 array mode deadlocks when `jobs` < ready jobs of an array rule
    # (docs/clusters.md): a profile with array mode must allow every job at once.
    for name in PROFILES:
        prof = _profile(name)
        if prof.get("slurm-array-jobs"):
            assert name == "ci-slurm" and int(prof["jobs"]) >= 100, name


def _rule_blocks() -> dict[str, str]:
    """Text of each rule (or checkpoint) of the workflow, by name."""
    out = {}
    for f in (REPO / "workflow" / "rules").glob("*.smk"):
        text = f.read_text()
        heads = list(re.finditer(r"^\s*(?:rule|checkpoint) (\w+):", text, re.M))
        for h, nxt in zip(heads, heads[1:] + [None]):
            out[h.group(1)] = text[h.start():nxt.start() if nxt else len(text)]
    return out


@pytest.mark.parametrize("name", PROFILES)
def test_profiles_leave_job_sizes_to_the_table(name):
    prof = _profile(name)
    for rule, block in (prof.get("set-resources", {}) or {}).items():
        for key in ("mem_mb", "runtime"):
            if key in block:
                assert PROFILE_OVERRIDES.get((name, rule, key)) == block[key], (
                    f"profiles/{name}: set-resources {rule}.{key} = {block[key]!r} overrides "
                    f"pzpipe.planning.resources.JOBS; change the table (or document the override)")


def test_every_rule_takes_its_size_from_the_table():
    from pzpipe.planning.resources import JOBS

    blocks = _rule_blocks()
    local = {"summary"}                       # localrules: no cluster job
    assert set(JOBS) == set(blocks) - local, "JOBS and the workflow's rules differ"
    for rule, text in blocks.items():
        if rule in local:
            assert "resources:" not in text, rule
            continue
        res = text.split("resources:", 1)[1].split("params:", 1)[0].split("run:", 1)[0]
        assert re.search(rf'\*\*rule_resources\(\s*CFG,\s*"{rule}"', res), \
            f"rule {rule}: resources not from pzpipe.planning.resources.JOBS"
        assert "lambda" not in res and "runtime=" not in res, f"rule {rule}: own job size"


def test_paths_only_in_common_smk():
    """The file layout is defined once (PATHS in rules/common.smk); rule files use it."""
    for f in (REPO / "workflow" / "rules").glob("*.smk"):
        if f.name == "common.smk":
            continue
        text = f.read_text()
        assert not re.search(r'\{RESULTS\}|["\']results/|\{TRAINSET_DIR\}/|PATHS\[[^\]]+\]\}/',
                             text), f"{f.name}: builds a path"


def test_every_rule_has_log_and_benchmark():
    """Each job writes its log and Snakemake's benchmark file (time, peak memory). The one
    exception: `summary`, which has no output so that it always runs (a benchmark file
    would be an output)."""
    for rule, text in _rule_blocks().items():
        assert re.search(r"^\s+log:", text, re.M), f"rule {rule}: no log:"
        if rule == "summary":
            assert not re.search(r"^\s+benchmark:", text, re.M)
            continue
        assert re.search(r"^\s+benchmark:\n\s+\"logs/benchmarks/", text, re.M), \
            f"rule {rule}: no benchmark: under logs/benchmarks/"


def test_table_sites_are_the_site_overlays():
    from pzpipe.planning.resources import JOBS

    sites = {s for e in JOBS.values() for s in (e.get("sites") or {})}
    overlays = {yaml.safe_load((REPO / "config" / f"{n}.yaml").read_text())["sizing"]["site"]
                for n in ("apollo", "sdumont")}
    assert sites <= overlays


def test_htcondor_request_memory_follows_the_table():
    from pzpipe.planning.resources import job_size

    prof = _profile("htcondor")
    threads = prof.get("set-threads", {})
    for rule, block in prof["set-resources"].items():
        if "request_memory" not in block or rule == "estimate_batch":
            continue
        size = job_size(rule, "apollo", threads.get(rule, 1))
        for attempt in (1, 2):
            assert _eval(block["request_memory"], attempt) == size["mem_mb"] * attempt, rule


def test_site_sizes_reach_the_rules():
    """The values the Apollo and SDumont profiles set before the table existed: unchanged."""
    from pzpipe.planning.resources import rule_resources

    def size(site, rule, threads=2, attempt=1):
        res = rule_resources({"sizing": {"site": site}}, rule)
        call = {"mem_mb": res["mem_mb"], "runtime": res.get("runtime")}
        out = {}
        for k, f in call.items():
            if f is None:
                continue
            n = f.__code__.co_argcount
            out[k] = f(None, threads, attempt) if n == 3 else f(None, attempt)
        return out

    assert size("apollo", "train") == {"mem_mb": 16000, "runtime": 120}
    assert size("apollo", "train", attempt=2) == {"mem_mb": 32000, "runtime": 240}
    assert size("apollo", "partition_batch") == {"mem_mb": 3000, "runtime": 60}
    assert size("apollo", "export") == {"mem_mb": 4000, "runtime": 240}
    assert size("apollo", "validate_estimate") == {"mem_mb": 8000, "runtime": 60}
    assert size("sdumont", "train") == {"mem_mb": 32000, "runtime": 120}
    assert size("sdumont", "partition_batch") == {"mem_mb": 8000, "runtime": 90}
    assert size(None, "train") == {"mem_mb": 4000, "runtime": 120}
    assert size(None, "validate_estimate", threads=3) == {"mem_mb": 8000}
    assert rule_resources({}, "validate") == {}        # the profile's default-resources


@pytest.mark.parametrize("name", ["ci-slurm", "apollo", "sdumont"])
def test_dry_run_through_profile(name, tmp_path):
    overlay = tmp_path / "plan.yaml"
    overlay.write_text(yaml.safe_dump({
        "inputs": {"files": [], "descriptor": {"n_objects": 50_000_000, "rows_per_file": 1_000_000}},
        "training": {"file": "rail:examples_data/testdata/test_dc2_training_9816.hdf5"},
        "validation": {"file": "rail:examples_data/testdata/test_dc2_validation_9816.hdf5"},
    }))
    (tmp_path / "config").symlink_to(REPO / "config")
    site = [] if name == "ci-slurm" else [str(REPO / "config" / f"{name}.yaml")]
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1000", "-s",
           str(REPO / "workflow" / "Snakefile"), "--directory", str(tmp_path),
           "--profile", str(REPO / "profiles" / name), "--configfile", *site, str(overlay)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "estimate_batch" in out
    if name != "ci-slurm":
        # threads from set-threads reach the estimate jobs (cpus_per_task = workers)
        assert re.search(r"cpus_per_task=(28|48)", out), out[-3000:]


# What a Slurm profile does when a job dies (cancelled, killed for its memory or time,
# node lost): tested for real on the one-node Slurm by tests/test_slurm_faults.py through
# profiles/ci-slurm; the site profiles must do the same.
RETRY_KEYS = ("retries", "rerun-incomplete", "keep-going")


@pytest.mark.parametrize("name", ["apollo", "sdumont"])
def test_site_profiles_retry_like_the_tested_profile(name):
    tested, site = _profile("ci-slurm"), _profile(name)
    for key in RETRY_KEYS:
        assert key in tested, f"profiles/ci-slurm: no {key}"
        assert site.get(key) == tested[key], (
            f"profiles/{name}: {key} = {site.get(key)!r}, the tested profiles/ci-slurm has "
            f"{tested[key]!r} (tests/test_slurm_faults.py)")
    assert int(tested["retries"]) >= 1


def _merged(*files) -> dict:
    def merge(a, b):
        for k, v in b.items():
            a[k] = merge(dict(a.get(k) or {}), v) if isinstance(v, dict) else v
        return a

    cfg: dict = {}
    for f in files:
        cfg = merge(cfg, yaml.safe_load(Path(f).read_text()) or {})
    return cfg


@pytest.mark.parametrize("name", ["ci-slurm", "apollo", "sdumont"])
def test_every_retry_asks_for_more_memory_and_time(name):
    """Each attempt a profile's `retries` allows asks every rule for more memory and more
    time than the one before (a job killed for exceeding either is resubmitted bigger),
    with the site overlay's sizing (caps included) and the profile's threads."""
    from pzpipe.planning.resources import JOBS, rule_resources

    prof = _profile(name)
    files = [REPO / "config" / "config.yaml"] + \
        ([] if name == "ci-slurm" else [REPO / "config" / f"{name}.yaml"])
    cfg = _merged(*files)
    threads = prof.get("set-threads", {}) or {}
    defaults = prof.get("default-resources", {}) or {}
    overrides = prof.get("set-resources", {}) or {}
    wc = SimpleNamespace(algo=None, batch="b000000")
    algos = list(cfg["algorithms"])
    for rule in JOBS:
        # the dask rules take mem_mb from the config (any value: it is multiplied)
        res = rule_resources(cfg, rule, mem_mb=2000 if JOBS[rule].get("mem_mb") == "config"
                             else None)
        for key in ("mem_mb", "runtime"):
            for algo in (algos if rule == "estimate_batch" else [None]):
                wc.algo = algo
                values = []
                for attempt in range(1, int(prof["retries"]) + 2):
                    if key in overrides.get(rule, {}):
                        v = _eval(overrides[rule][key], attempt)
                    elif key in res:
                        f = res[key]
                        n = f.__code__.co_argcount
                        v = f(wc, int(threads.get(rule, 1)), attempt) if n == 3 \
                            else f(wc, attempt)
                    else:
                        v = _eval(defaults[key], attempt)
                    values.append(v)
                assert all(b > a for a, b in zip(values, values[1:])), \
                    f"profiles/{name}: {rule} ({algo}) {key} by attempt: {values}"
