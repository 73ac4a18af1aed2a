"""Capacity planning: the work of a video from the product's chunk plans, pool sizes that reach a
target, and the discrete-event simulation of the engine's policy (exact on cases with a known
answer; at least 1000 videos on at least 64 GPUs)."""

from __future__ import annotations

import pytest

from flows.cli import main
from models.errors import ConfigError
from stages.capacity import Speeds, Workload, plan_for, plan_pools, simulate

SPEEDS = Speeds({"init": {"L40S": 0.21, "H100": 0.09}, "extend": {"L40S": 0.27, "H100": 0.12},
                 "refine": {"H100": 0.85, "H200": 0.74}},
                overhead_s={"init": 2, "extend": 6, "refine": 20}, price_per_hour={"L40S": 1.1, "H100": 2.9, "H200": 3.6})


def test_a_videos_steps_follow_the_chunk_plans():
    steps = Workload("modelscope", num_frames=240, steps=50, refine_steps=50).steps_per_video()
    assert steps["chunks"] == 29 and steps["init"] == 50 and steps["extend"] == 28 * 50
    assert steps["refine_chunks"] == 15 and steps["refine_chunk_steps"] == 30  # T' = 600 at spacing 1000 / 50 = 20


def test_a_plan_reaches_its_target_on_the_cheapest_types_and_its_simulation_confirms_it(tmp_path):
    workload = Workload("modelscope", num_frames=240)
    plan = plan_pools(workload, SPEEDS, videos_per_hour=300)
    assert plan.gpu_type == {"init": "L40S", "extend": "L40S", "refine": "H100"}  # cost per video, not speed
    assert plan.gpus >= 64 and plan.videos_per_hour >= 300
    assert plan.size["refine"] % plan.refine_concurrency == 0
    sim = simulate(plan, 1000)
    assert sim.videos == 1000 and len(sim.latency_s) == 1000
    assert 0.85 * plan.videos_per_hour < sim.videos_per_hour <= plan.videos_per_hour  # fill and drain of a batch
    assert max(sim.utilisation.values()) <= 1.0 and sim.utilisation["extend"] > 0.85
    # back-pressure: init starts a video only while fewer than 3 wait for extend
    assert max(q["extend"] for _, q in sim.queue) <= 3 + plan.size["init"] - 1


def test_the_simulation_is_exact_where_the_answer_is_known():
    one = Speeds({"init": {"g": 1.0}, "extend": {"g": 1.0}, "refine": {"g": 1.0}})
    workload = Workload("tiny", num_frames=24, steps=10, refine=False)  # init 10 s, extend 10 s per video
    plan = plan_for(workload, one, {"init": 1, "extend": 1})
    assert plan.stage_s == {"init": 10.0, "extend": 10.0}
    assert simulate(plan, 5).wall_s == pytest.approx(60.0)  # a two-stage pipeline: (5 + 1) x 10 s
    two = plan_for(workload, one, {"init": 2, "extend": 2})
    assert simulate(two, 6).wall_s == pytest.approx(40.0)  # 3 waves of 2, each 10 s per stage
    spaced = simulate(plan, 5, arrivals_per_hour=3600 / 30)  # one video every 30 s: nothing waits
    assert spaced.wall_s == pytest.approx(4 * 30 + 20) and set(spaced.latency_s) == {20.0}


def test_interactive_videos_overtake_a_batch_in_the_simulation():
    one = Speeds({"init": {"g": 1.0}, "extend": {"g": 1.0}, "refine": {"g": 1.0}})
    plan = plan_for(Workload("tiny", num_frames=24, steps=10, refine=False), one, {"init": 1, "extend": 1})
    sim = simulate(plan, 40, interactive_every=8)  # 5 interactive among 40, all submitted at once
    latencies = sim.latency_s
    assert len(latencies) == 40 and min(latencies) == 20.0


def test_plan_prints_a_plan_and_its_simulation_and_refuses_bad_input(tmp_path, capsys):
    speeds = tmp_path / "speeds.yaml"
    speeds.write_text("step_s:\n  init: {H100: 0.09}\n  extend: {H100: 0.12}\n  refine: {H100: 0.85}\n")
    png = tmp_path / "queues.png"
    assert main(["plan", "--speeds", str(speeds), "--videos-per-hour", "100", "--simulate", "1000",
                 "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "extend" in out and "GPUs" in out and "simulated 1000 videos" in out and "busy" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plan", "--speeds", str(speeds), "--videos-per-hour", "-1"]) == 2
    assert "videos_per_hour" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("step_s:\n  init: {H100: 0}\n  extend: {H100: 0.1}\n  refine: {H100: 0.1}\n")
    assert main(["plan", "--speeds", str(bad), "--videos-per-hour", "10"]) == 2
    assert "step_s.init.H100" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="price_per_hour"):
        plan_pools(Workload(), Speeds(SPEEDS.step_s, price_per_hour={"H100": 1.0}), 10)
