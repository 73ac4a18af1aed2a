"""The Prefect flow ``bench``: one measured row appended per run, compared with the previous
run of the same configuration; the orchestration overhead share on local Ray."""

from __future__ import annotations

import pyarrow.parquet as pq

FAST = dict(repeats=1, num_frames=16, num_inference_steps=2, refine=False)


def test_two_runs_append_rows_and_the_second_compares_with_the_first(prefect_harness, ray_local, tmp_path):
    from flows.bench import bench, comparison_markdown, previous_row

    history = str(tmp_path / "history.parquet")
    first = bench(stages=["init"], history_uri=history, **FAST)
    second = bench(stages=["init"], history_uri=history, orchestration=True, **FAST)
    table = pq.read_table(history)
    assert table.column("run_id").to_pylist() == [first["run_id"], second["run_id"]]
    assert previous_row(history, second)["run_id"] == first["run_id"]
    assert second["orch_videos"] == 1 and 0 < second["orch_stage_compute_s"] < second["orch_flow_wall_s"]
    assert 0 < second["orch_overhead_share"] < 1
    markdown = comparison_markdown(second, previous_row(history, second))
    assert f"`{first['run_id']}`" in markdown and "| init_step_s |" in markdown
