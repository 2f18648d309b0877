import math

import numpy as np
import pytest

from helpers.inputs import write_parquet
from pzpipe import PipelineError
from pzpipe.run.layout import Layout, batch_id, batch_index, file_rows, make_layout, read_descriptor


def test_chunks_cover_every_row_once():
    lay = Layout([("a", 25), ("b", 10), ("c", 1)], chunk_rows=10, chunks_per_batch=2)
    chunks = list(lay.chunks())
    assert [c.rows for c in chunks] == [10, 10, 5, 10, 1]
    assert lay.n_chunks == 5 and lay.n_batches == 3 and lay.n_objects == 36
    covered = {(c.file, r) for c in chunks for r in range(c.start, c.stop)}
    assert len(covered) == 36
    got = [c for b in lay.batch_ids() for c in lay.batch_chunks(b)]
    assert got == chunks
    assert lay.batch_files("b000001") == ["a", "b"]


def test_batch_ids_roundtrip():
    assert batch_id(12) == "b000012" and batch_index("b000012") == 12
    with pytest.raises(ValueError):
        batch_index("x12")


def test_synthetic_descriptor_40e9_is_fast():
    files, pixels = read_descriptor({"n_objects": 40e9, "rows_per_file": 130000})
    assert pixels is None
    lay = Layout(files, 130000, 128)
    assert lay.n_objects == 40_000_000_000
    assert lay.n_chunks == math.ceil(40e9 / 130000)
    assert lay.n_batches == math.ceil(lay.n_chunks / 128)
    last = lay.batch_chunks(lay.n_batches - 1)
    assert last[-1].stop == files[-1][1]


def test_csv_descriptor(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("path,nrows\nx.parquet,5\ny.parquet,7\n")
    assert read_descriptor(str(p)) == ([("x.parquet", 5), ("y.parquet", 7)], None)
    bad = tmp_path / "bad.csv"
    bad.write_text("file,rows\nx,1\n")
    with pytest.raises(PipelineError, match="path,nrows"):
        read_descriptor(str(bad))


def test_rows_from_parquet_footer_and_hdf5(tmp_path, cfg):
    p = write_parquet(tmp_path / "a.parquet", {"x": np.arange(17)}, row_group_size=5)
    assert file_rows(p) == 17
    lay = make_layout(cfg)
    assert lay.n_objects == 20449


def test_bad_files_give_clear_errors(tmp_path):
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    with pytest.raises(PipelineError, match="empty"):
        file_rows(str(empty))
    junk = tmp_path / "junk.parquet"
    junk.write_text("not a parquet file at all")
    with pytest.raises(PipelineError, match="not a readable parquet"):
        file_rows(str(junk))
    with pytest.raises(PipelineError, match="not found"):
        file_rows(str(tmp_path / "missing.parquet"))
