"""Lint of the Snakemake profiles: known options, known rules, valid resource expressions,
partitions that exist at the site, and a dry run through each Slurm profile."""

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
