"""``streamingt2v bench`` and the Prefect flow ``bench``: the CLI's input checks; one measured row
appended per run, compared with the previous run of the same configuration; the orchestration
overhead share on local Ray."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from benchmarks.pipeline import BenchConfig
from flows.bench import bench_main
from models.errors import ConfigError

FAST = dict(repeats=1, num_frames=16, num_inference_steps=2, refine=False)


@pytest.mark.integration  # a whole `streamingt2v bench` run
def test_the_cli_appends_a_row_and_refuses_bad_input(tmp_path, capsys):
    history = str(tmp_path / "bench" / "history.parquet")
    assert bench_main(["--stages", "init", "--repeats", "1", "--num-frames", "0", "--history", history]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["init_step_s"] > 0 and "extend_step_s" not in row
    assert bench_main(["--repeats", "0", "--history", history]) == 2
    assert "repeats=0" in capsys.readouterr().err
    assert bench_main(["--stages", "init,decode", "--history", history]) == 2
    assert "stages" in capsys.readouterr().err
    with pytest.raises(ConfigError) as err:
        BenchConfig(orchestration=True, preset="modelscope", weights="random")
    assert err.value.field == "orchestration"


@pytest.mark.integration
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
