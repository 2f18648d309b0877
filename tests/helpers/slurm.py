"""The one-node Slurm of `.ci/setup_slurm.sh` for the tests marked `slurm`
(test_slurm.py, test_slurm_faults.py): is it usable, and the skip that becomes a failure
under PZPIPE_REQUIRE_SLURM=1 (CI sets it after running the setup script)."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

REQUIRE = os.environ.get("PZPIPE_REQUIRE_SLURM") == "1"


def slurm_status() -> str | None:
    """None if a usable Slurm answers, else the reason."""
    for tool in ("sbatch", "squeue", "sinfo", "scontrol", "scancel"):
        if shutil.which(tool) is None:
            return f"{tool} not found (run .ci/setup_slurm.sh as root)"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
        nodes = subprocess.run(["sinfo", "-h", "-o", "%P %t"], capture_output=True, text=True,
                               timeout=20)
    except (subprocess.TimeoutExpired, OSError) as exc:
        return f"Slurm does not answer: {exc}"
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return f"slurmctld down: {ping.stdout.strip()} {ping.stderr.strip()}"
    states = nodes.stdout.split()
    if not any(s.rstrip("*~#") in ("idle", "mix", "alloc", "comp") for s in states[1::2]):
        return f"no usable node: sinfo says {nodes.stdout.strip()!r}"
    return None


def require_slurm() -> None:
    """Skip without a usable Slurm; FAIL instead under PZPIPE_REQUIRE_SLURM=1."""
    reason = slurm_status()
    if reason:
        if REQUIRE:
            pytest.fail(f"PZPIPE_REQUIRE_SLURM=1 but Slurm is not usable: {reason}")
        pytest.skip(f"no Slurm here: {reason}")
