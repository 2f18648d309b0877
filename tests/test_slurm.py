"""The pipeline through a real Slurm (slurm executor plugin), identical to a local run.

Needs the one-node Slurm of `.ci/setup_slurm.sh` (or any Slurm with partitions
`cpu` and `cpu_dev`). Without Slurm the tests are skipped, unless
PZPIPE_REQUIRE_SLURM=1 (set by CI after running the setup script): then they
FAIL, so a CI that asked for Slurm cannot silently pass without it.

Compares two runs of config/test.yaml in two scratch working directories (the session's
runs of tests/helpers/runs.py, shared with test_determinism.py):
  local:  --profile profiles/local --cores 2      (small_run)
  slurm:  --profile profiles/ci-slurm   (sbatch, squeue, array jobs; second_run)
every estimate file and every release file byte for byte (not mtimes).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.runs import second_run, small_run, smk
from helpers.slurm import require_slurm
from helpers.trees import compare_trees, files, format_diffs

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "test.yaml"
# Optional extra overlay (e.g. to run a subset of algorithms while debugging).
EXTRA = [os.environ["PZPIPE_SLURM_EXTRA_CONFIG"]] if os.environ.get("PZPIPE_SLURM_EXTRA_CONFIG") else []
pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def slurm():
    require_slurm()


@pytest.fixture(scope="module")
def runs(slurm, tmp_path_factory):
    """(the local run, the Slurm run, the Slurm run's Snakemake output): the session's
    small run (helpers.runs.small_run, profiles/local) and its second run, which goes
    through Slurm here (helpers.runs.second_run; test_determinism.py compares the same
    pair)."""
    if EXTRA:                     # debugging with an extra overlay: a pair of its own
        local, on_slurm = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("slurm")
        opts = dict(profile=None, overlays=EXTRA, timeout=2400, keep_output=True)
        smk(local, "--profile", str(REPO / "profiles" / "local"), "--cores", "2", cwd=local,
            **opts)
        r = smk(on_slurm, "--profile", str(REPO / "profiles" / "ci-slurm"), cwd=on_slurm,
                **opts)
        return local, on_slurm, r.stdout + r.stderr
    local = small_run(tmp_path_factory)
    on_slurm, how = second_run(tmp_path_factory)
    assert how == "slurm", "Slurm answered but the second run was made locally"
    return local, on_slurm, ((on_slurm / "snakemake.stdout").read_text()
                             + (on_slurm / "snakemake.stderr").read_text())


def test_setup_script_is_idempotent_and_reports_idle(slurm):
    if os.geteuid() != 0:
        pytest.skip("setup script needs root")
    r = subprocess.run(["bash", str(REPO / ".ci" / "setup_slurm.sh")], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "already running" in r.stdout or "up" in r.stdout


def test_jobs_went_through_slurm(runs):
    _, on_slurm, log = runs
    submitted = re.findall(r"Submitted (?:array )?job .*?(?:SLURM|external) (?:job )?ID (\d+)", log)
    assert submitted, "no sbatch submission in the Snakemake log:\n" + log[-3000:]
    # array mode: the estimate jobs of one batch-wave share one sbatch
    assert "Submitted array job" in log
    slurm_logs = list((on_slurm / "logs" / "slurm").rglob("*.log"))
    assert slurm_logs, "slurm-logdir (profile ci-slurm) holds no job log"
    # every estimate job ran inside a Slurm job (the plugin names its log dir after the rule)
    assert any("estimate_batch" in str(p) for p in slurm_logs)


def test_estimates_identical_to_local_run(runs):
    """Every estimate file of the Slurm run has the bytes of the local run's (a column
    comparison would call a float column with a NaN - a PDF-bad row - unequal to itself)."""
    local, on_slurm, _ = runs
    a, b = local / "results" / "estimates", on_slurm / "results" / "estimates"
    assert len(files(a)) >= 2, "local run produced no estimates"
    diffs = compare_trees(a, b)
    assert not diffs, "estimates differ between the local and the Slurm run:\n" + format_diffs(diffs)


def test_release_identical_to_local_run(runs):
    """The whole release directory (dataset files at any depth, manifest, metadata) has the
    same bytes in both runs."""
    local, on_slurm, _ = runs
    a, b = local / "results" / "release", on_slurm / "results" / "release"
    assert [n for n in files(a) if n.endswith(".parquet")], "local run wrote no release file"
    diffs = compare_trees(a, b)
    assert not diffs, "release differs between the local and the Slurm run:\n" + format_diffs(diffs)


def test_progress_reports_everything_done(runs):
    sys.path.insert(0, str(REPO / "workflow" / "src"))
    import yaml

    from pzpipe.stages import progress
    from pzpipe.run.config import deep_update, enabled_algorithms, validate_config
    from pzpipe.run.layout import make_layout

    _, on_slurm, _ = runs
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for f in [CONFIG, *EXTRA]:
        cfg = deep_update(cfg, yaml.safe_load(Path(f).read_text()))
    cfg = validate_config(cfg)
    lay = make_layout(cfg, imported=str(on_slurm / "results" / "objects_hats"))   # inputs.files -> HATS
    rows = progress.summary(on_slurm / "results", lay, enabled_algorithms(cfg),
                            logs_dir=on_slurm / "logs")
    for r in rows:
        assert r["chunks_done"] == r["chunks"] and r["chunks_failed"] == 0, r
