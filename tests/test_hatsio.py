"""pzpipe.core.hatsio: layout from a HATS catalog's metadata; hats-import through a running
dask scheduler (the way it runs on Slurm: `dask scheduler --scheduler-file` + workers
started with srun), not a local cluster."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pzpipe.core import hatsio
from pzpipe.planning import synth
from pzpipe.run.layout import read_descriptor, write_hats_descriptor


def test_pixel_counts_from_statistics_metadata_and_footers(tmp_path):
    cat = tmp_path / "cat"
    synth.write_catalog(cat, 450, seed=1, rows_per_pixel=100)
    counts, source = hatsio.pixel_counts(cat)
    assert source == "per_partition_statistics.parquet"
    assert [n for _, _, n in counts] == [100, 100, 100, 100, 50]
    for f in ("per_partition_statistics.parquet",):
        (cat / f).unlink()
    counts2, source2 = hatsio.pixel_counts(cat)          # dataset/_metadata
    assert source2 == "dataset/_metadata" and counts2 == counts
    (cat / "dataset" / "_metadata").unlink()
    counts3, source3 = hatsio.pixel_counts(cat)
    assert source3 == "pixel file footers" and counts3 == counts
    out = tmp_path / "pixels.csv"
    assert write_hats_descriptor(cat, out) == 5
    files, pixels = read_descriptor(str(out), catalog=str(cat))
    assert [(k, p) for k, p, _ in counts] == pixels
    assert [n for _, n in files] == [n for _, _, n in counts]
    assert files[0][0] == hatsio.pixel_file(cat, *pixels[0])


@pytest.mark.slow
def test_import_through_a_scheduler_file(tmp_path):
    """hats-import on a dask cluster started like on Slurm (scheduler file), as
    inputs.to_hats.dask.scheduler / trainset.dask.scheduler configure it."""
    from rail.utils.path_utils import find_rail_file

    sched = tmp_path / "scheduler.json"
    bindir = Path(sys.executable).parent
    procs = [subprocess.Popen([str(bindir / "dask"), "scheduler", "--scheduler-file", str(sched),
                               "--no-dashboard", "--port", "0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(60):
            if sched.exists() and sched.stat().st_size:
                break
            time.sleep(0.5)
        procs.append(subprocess.Popen([str(bindir / "dask"), "worker", "--scheduler-file",
                                       str(sched), "--nthreads", "1", "--memory-limit", "2GB",
                                       "--no-dashboard"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        f = find_rail_file("examples_data/testdata/rubin_dm_dc2_example.pq")
        out = hatsio.import_catalog([f], tmp_path / "objects", ra_column="ra", dec_column="decl",
                                    catalog_name="objects", pixel_threshold=50,
                                    highest_order=9, scheduler=str(sched))
    finally:
        for p in procs[::-1]:
            p.terminate()
            p.wait(timeout=30)
    counts, source = hatsio.pixel_counts(out)
    assert source == "per_partition_statistics.parquet"
    assert sum(n for *_, n in counts) == pq.ParquetFile(f).metadata.num_rows == 100
    assert len(counts) >= 2
