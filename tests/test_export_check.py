"""The object-conservation check on hand-made partition/estimate files."""
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pzpipe import PipelineError
from pzpipe.export import check_conservation
from pzpipe.layout import Layout


def _part(path, ids, rows_in, cut):
    w = pq.ParquetWriter(path, pa.schema([("object_id", pa.int64())]))
    w.write_table(pa.table({"object_id": pa.array(ids, pa.int64())}))
    meta = {"batch": "b000000", "chunks": [{"chunk": 0, "rows_in": rows_in, "rows_out": len(ids),
                                             "cut": cut, "row_group": 0}]}
    w.add_key_value_metadata({"pzpipe": json.dumps(meta)})
    w.close()


def _est(path, ids):
    pq.write_table(pa.table({"object_id": pa.array(ids, pa.int64())}), path)


@pytest.fixture
def files(tmp_path):
    ids = np.arange(10)
    _part(tmp_path / "p.parquet", ids, 12, {"no_detections": 2})
    _est(tmp_path / "e.parquet", ids)
    return Layout([("in", 12)], 100, 1), {"b000000": str(tmp_path / "p.parquet")}, tmp_path


def test_conserved(files):
    lay, parts, d = files
    rep = check_conservation(lay, parts, {"knn": {"b000000": str(d / "e.parquet")}})
    assert rep["ok"] and rep["objects_in"] == 12 and rep["cut_by_reason"] == {"no_detections": 2}


def test_row_removed_is_caught(files):
    lay, parts, d = files
    _est(d / "e.parquet", np.arange(9))
    with pytest.raises(PipelineError, match="9 rows, partition has 10"):
        check_conservation(lay, parts, {"knn": {"b000000": str(d / "e.parquet")}})


def test_ids_swapped_is_caught(files):
    lay, parts, d = files
    _est(d / "e.parquet", np.r_[np.arange(9), 42])
    with pytest.raises(PipelineError, match="ids differ"):
        check_conservation(lay, parts, {"knn": {"b000000": str(d / "e.parquet")}})


def test_uncounted_cut_is_caught(files, tmp_path):
    lay, parts, d = files
    _part(d / "p.parquet", np.arange(10), 12, {"no_detections": 1})
    with pytest.raises(PipelineError, match="rows_in 12 != rows_out 10"):
        check_conservation(lay, parts, {"knn": {"b000000": str(d / "e.parquet")}})


def test_missing_input_rows_caught(files):
    lay, parts, d = files
    lay2 = Layout([("in", 13)], 100, 1)
    with pytest.raises(PipelineError, match="layout expects 13"):
        check_conservation(lay2, parts, {"knn": {"b000000": str(d / "e.parquet")}})
