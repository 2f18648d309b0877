"""pzpipe.planning.bench's bookkeeping, without timing anything: which rate the planner
takes from a bench row, how a worker's measured start reaches resources/throughput.yaml,
and that the 40e9 column is the planner's figure (start included)."""
import pytest

from pzpipe.planning import bench, forecast, plan

ROW = {"objects": 12000, "bare_rail_obj_s": 40.0, "pipeline_1w_obj_s": 800.0,
       "pipeline_1w_obj_s_per_core": 800.0, "pipeline_2w_obj_s": 1300.0,
       "pipeline_2w_obj_s_per_core": 650.0, "ratio_1w": 20.0, "ratio_2w_per_core": 16.25,
       "scaling_1_to_2": 1.625, "bytes_per_object": 46.0, "max_cdf_error": 6e-4,
       "memory": {"peak_mb": 1000.0, "rows": 130000}}
STEADY = {**ROW, "start_1w_s": 1.9, "start_2w_s": 2.3, "load_s": 2.3,
          "pipeline_1w_steady_obj_s": 930.0, "pipeline_1w_steady_obj_s_per_core": 930.0,
          "pipeline_2w_steady_obj_s": 1740.0, "pipeline_2w_steady_obj_s_per_core": 870.0}

THROUGHPUT = """\
version: 1
source: >-
  old
algorithms:
  lephare:
    # a comment that stays
    obj_per_s_core: 669
    mem_mb_per_worker: 1040
    measured: true
  knn:
    obj_per_s_core: 40000
    load_s: 0.5
    mem_mb_per_worker: 383
    measured: true
sites: {}
"""


def test_planner_rate_is_the_steady_rate_where_measured():
    assert bench.planner_rate(STEADY) == 870.0
    assert bench.planner_rate(ROW) == 650.0           # rows measured before: start inside


def test_update_throughput_writes_rate_and_load(tmp_path):
    import yaml

    p = tmp_path / "throughput.yaml"
    p.write_text(THROUGHPUT)
    knn = {**STEADY, "load_s": 0.75}
    bench.update_throughput({"algos": {"lephare": STEADY, "knn": knn}}, p)
    text = p.read_text()
    tp = yaml.safe_load(text)
    assert tp["algorithms"]["lephare"]["obj_per_s_core"] == 870
    assert tp["algorithms"]["lephare"]["load_s"] == 2.3        # inserted
    assert tp["algorithms"]["knn"]["load_s"] == 0.75           # replaced
    assert tp["algorithms"]["lephare"]["mem_mb_per_worker"] == 1000
    assert "# a comment that stays" in text
    bench.update_throughput({"algos": {"lephare": ROW}}, p)  # no start measured: load kept
    tp = yaml.safe_load(p.read_text())
    assert tp["algorithms"]["lephare"]["obj_per_s_core"] == 650
    assert tp["algorithms"]["lephare"]["load_s"] == 2.3


def test_40e9_column_is_the_planners_figure_with_the_start():
    tp = plan.load_throughput()
    tp["algorithms"] = {**tp["algorithms"],
                        "lephare": {**tp["algorithms"]["lephare"], "obj_per_s_core": 870.0,
                                    "load_s": 2.3}}
    p = plan.plan(objects=bench.RELEASE_OBJECTS, throughput=tp)
    assert bench._apollo_hours(870.0, 2.3) == pytest.approx(
        p["per_algorithm"]["lephare"]["apollo"]["wall_hours"])
    site = tp["sites"]["apollo"]
    no_start = forecast.release_wall_hours(bench.RELEASE_OBJECTS, 870.0, site)
    assert bench._apollo_hours(870.0, 2.3) > no_start
    assert bench._apollo_hours(870.0, 600.0) > bench._apollo_hours(870.0, 2.3)


def test_markdown_shows_steady_rows_and_the_start():
    md = bench.to_markdown({"machine": {"cpus": 2, "python": "3.11"}, "command": "c",
                            "algos": {"lephare": STEADY, "knn": ROW}})
    lines = {ln.split("|")[1].strip(): ln for ln in md.splitlines() if ln.startswith("| ")}
    cells = [c.strip() for c in lines["lephare"].split("|")[1:-1]]
    assert cells[3:10] == ["930", "23.25", "870", "21.75", "1.87", "2.30", "1000 (130000)"]
    cells = [c.strip() for c in lines["knn"].split("|")[1:-1]]
    assert cells[3:9] == ["800", "20.00", "650", "16.25", "1.62", "-"]
    assert "start 1.90 s / 2.30 s" in md
