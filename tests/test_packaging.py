"""Packaging: what pyproject.toml declares, a non-editable install, snakefmt.

- The declared metadata: a light base ([read] = numpy, pyarrow, qp-prob only), the
  setuptools floor that `license = "MIT"` (an SPDX expression) needs, a LICENSE file.
- A non-editable install (`pip install --no-deps --target`, the wheel setuptools
  builds from a copy of the clone, then the copy deleted): the installed package
  finds its config schema and throughput table inside site-packages (real files, equal
  to the canonical ones), validates a config and loads the throughput table, and
  ships the license. Dependencies come from the test's own environment; this proves
  the wheel's contents, not dependency resolution (the [read] venv test does that).
- `snakefmt --check workflow/` (rule files formatted), when snakefmt is installed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_declared_metadata():
    pp = _pyproject()
    req = pp["build-system"]["requires"]
    assert any(r.replace(" ", "").startswith("setuptools>=") and
               int(r.split(">=")[1].split(".")[0]) >= 77 for r in req), req
    proj = pp["project"]
    assert proj["license"] == "MIT" and (REPO / "LICENSE").is_file()
    assert "MIT License" in (REPO / "LICENSE").read_text()
    names = lambda reqs: sorted(r.split(">")[0].split("=")[0].split("<")[0].strip() for r in reqs)
    # the reader, `pzpipe verify`, and lsdb for the READMEs' snippets (issue 22; nothing of
    # pzpipe imports lsdb at import time: tests/test_collection.py checks it in a clean venv)
    assert names(proj["optional-dependencies"]["read"]) == ["lsdb", "numpy", "pyarrow", "qp-prob"]
    assert set(names(proj["dependencies"])) <= {"numpy", "pyarrow", "qp-prob"}
    # the pipeline extra mirrors envs/requirements.in (minus pytest, snakefmt, hats-import)
    req_in = [line.split("#")[0].strip() for line in
              (REPO / "envs" / "requirements.in").read_text().splitlines()]
    req_in = {r for r in req_in if r and r.split("=")[0] not in ("pytest", "snakefmt")}
    assert set(proj["optional-dependencies"]["pipeline"]) == req_in


def test_package_data_links_point_at_the_canonical_files():
    data = REPO / "workflow" / "src" / "pzpipe" / "data"
    for name, canonical in (("config.schema.yaml", "workflow/schemas/config.schema.yaml"),
                            ("throughput.yaml", "resources/throughput.yaml"),
                            ("pdf_format.md", "docs/pdf_format.md")):
        assert (data / name).resolve() == (REPO / canonical).resolve()


def test_non_editable_install(tmp_path):
    from helpers.inputs import copy_clone

    clone = copy_clone(tmp_path / "clone")
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--target", str(site), str(clone)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = tmp_path / "config.yaml"
    shutil.copy(REPO / "config" / "config.yaml", cfg)
    schema_src = (REPO / "workflow" / "schemas" / "config.schema.yaml").read_bytes()
    tp_src = (REPO / "resources" / "throughput.yaml").read_bytes()
    shutil.rmtree(clone)                     # nothing may point back into the source tree
    code = f"""
import os, sys, glob
import pzpipe, pzpipe.run.config as c, pzpipe.planning.plan as p
site = {str(site)!r}
assert pzpipe.__file__.startswith(site), pzpipe.__file__
for f in (c.SCHEMA_PATH, p.THROUGHPUT_FILE):
    assert str(f).startswith(site) and os.path.isfile(f) and not os.path.islink(f), f
assert open(c.SCHEMA_PATH, 'rb').read() == {schema_src!r}
assert open(p.THROUGHPUT_FILE, 'rb').read() == {tp_src!r}
cfg = c.load_config({str(cfg)!r})
assert cfg['zgrid']['nz'] == 301 and cfg['estimate']['pdf_bits'] == 10
assert p.load_throughput()
assert glob.glob(os.path.join(site, 'pzpipe-*.dist-info', 'licenses', 'LICENSE'))
from pzpipe.release.read import to_ensemble, pdf_grid
from pzpipe.release import bundle                  # the release's copy of docs/pdf_format.md
assert bundle.pdf_format_text() == {(REPO / "docs" / "pdf_format.md").read_text()!r}
print('ok')
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_workflow_catalog_file_and_min_version():
    y = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    usage = y["usage"]
    assert set(usage["software-stack-deployment"]) <= {"conda", "apptainer", "apptainer+conda",
                                                       "report"}
    assert usage["mandatory-flags"]["flags"]
    assert "min_version(" in (REPO / "workflow" / "Snakefile").read_text()
    assert (REPO / "config" / "README.md").is_file()


def test_rule_files_are_snakefmt_clean():
    exe = shutil.which("snakefmt") or (Path(sys.executable).parent / "snakefmt")
    if not Path(exe).exists():
        pytest.skip("snakefmt is not installed (it is in envs/requirements.lock: make env)")
    r = subprocess.run([str(exe), "--check", "workflow/"], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, (
        "rule files are not snakefmt-formatted; run `snakefmt workflow/`:\n" + r.stderr[-3000:])
