"""The clean venv of the light install, made exactly as the README says (``python -m venv``
then ``pip install "./[read]"`` from a clone of the checkout; packages from pip's
configured index), once per test session and shared by every test that needs it
(test_read.py, test_collection.py)."""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .inputs import copy_clone


def read_venv(tmp_path_factory) -> tuple[Path, dict]:
    """``(venv directory, {"install_s": seconds, "clone": path})``, built once per session
    (a lock file guards it; pytest-xdist workers share it). PZPIPE_TEST_READ_VENV names an
    existing one to use instead (while developing tests; it is only used)."""
    if os.environ.get("PZPIPE_TEST_READ_VENV"):
        return Path(os.environ["PZPIPE_TEST_READ_VENV"]), {"install_s": None, "clone": None}
    base = tmp_path_factory.getbasetemp()
    root = base / "pzpipe-read-venv"
    with open(base / "pzpipe-read-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / ".done"
        if not done.exists():
            import shutil

            if root.exists():
                shutil.rmtree(root)
            root.mkdir(parents=True)
            clone = copy_clone(root / "clone")
            venv = root / "venv"
            t0 = time.time()
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
            r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                                "./[read]"], capture_output=True, text=True, timeout=1200,
                               cwd=clone)
            if r.returncode != 0:
                raise AssertionError(f"pip install ./[read] failed:\n{r.stderr[-3000:]}")
            done.write_text(json.dumps({"install_s": round(time.time() - t0, 1),
                                        "clone": str(clone)}))
    return root / "venv", json.loads((root / ".done").read_text())


def run_in(venv: Path, args: list[str], cwd=None, timeout=600) -> subprocess.CompletedProcess:
    """Run a command of the venv (``args[0]`` a script name in its bin/, e.g. python or
    pzpipe) with the tests' PYTHONPATH removed, so that only the venv's packages load."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=env)
