"""The performance harness: FLOP counts, switch equivalence, one real row on the tiny preset,
the Parquet history and the real-size FLOPs on the meta device (its CLI: tests/flows/test_bench.py)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import hardware
from benchmarks.pipeline import BenchConfig, Harness, append_history, run
from benchmarks.steps import Switches, count_flops, extend_step, meta_step_flops
from models.errors import ConfigError
from models.guidance import GuidanceWeights
from stages.sources import ModelSources


def test_flop_counter_counts_matmuls_convolutions_and_attention():
    lin = torch.nn.Linear(64, 32, bias=False)
    assert count_flops(lambda: lin(torch.randn(10, 64))) == 2 * 10 * 64 * 32
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert count_flops(lambda: conv(torch.randn(1, 3, 16, 16))) == 2 * 16 * 16 * 8 * 3 * 9
    q = torch.randn(2, 4, 10, 16)  # attention: QK^T and AV, 2 * (2 * n * n * d) per head
    assert count_flops(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q)) == 2 * 4 * 2 * (2 * 10 * 10 * 16)


@torch.no_grad()
@pytest.mark.parametrize("weights", [GuidanceWeights(7.5, 7.5), GuidanceWeights(7.5, 3.0)])
def test_every_switch_computes_the_same_step(weights):
    model = ModelSources(weights="random").load_streaming()
    for merger in model.unet.cam.mergers:  # a CAM that acts (zero-initialised P_out would hide E_cond)
        torch.nn.init.normal_(merger.proj_out.weight, std=0.1)
    torch.nn.init.normal_(model.unet.cam.control.frame_encoder.conv_out.weight, std=0.1)
    for p in model.unet.apm.parameters():
        torch.nn.init.normal_(p, std=0.1)
    torch.manual_seed(0)
    reference = extend_step(model, Switches(), weights)[0]()
    # Eq. 13 adds the branches with weights w_text and w_anchor, so a float32 rounding difference of one
    # branch (another BLAS kernel, another CPU) reaches the guided output up to 1 + w_text + w_anchor times.
    atol = 1e-5 * (1 + weights.text + weights.anchor)
    for switches in (Switches(batched_guidance=False), Switches(reuse_econd=False), Switches(sdpa=False)):
        torch.manual_seed(0)
        torch.testing.assert_close(extend_step(model, switches, weights)[0](), reference, rtol=1e-4, atol=atol)


def test_three_way_guidance_costs_a_third_branch():
    model = ModelSources(weights="random").load_streaming()
    two, three = (count_flops(extend_step(model, Switches(), w)[0]) for w in (GuidanceWeights(7.5, 7.5),
                                                                              GuidanceWeights(7.5, 3.0)))
    assert three == pytest.approx(1.5 * two, rel=0.02)


@pytest.mark.integration  # the whole harness, a whole video end to end included
def test_a_tiny_run_measures_every_stage_end_to_end(tmp_path):
    config = BenchConfig(repeats=1, num_frames=24, num_inference_steps=2, refine_steps=25,
                         history=str(tmp_path / "h.parquet"))
    row = run(config)
    peak = row["peak_tflops"] * 1e12
    assert row["peak_source"] == "measured matmul" and peak > 0
    for stage in ("init", "extend", "refine"):
        assert row[f"{stage}_step_s"] > 0 and row[f"{stage}_step_tflop"] > 0 and 0 < row[f"{stage}_mfu"] <= 1
        assert row[f"{stage}_branches"] == 2
    assert row["refine_latent_shape"] == "1x4x24x32x32"  # 128x128 canvas, x4 VAE, 24-frame chunk
    assert row["e2e_num_frames"] == 24 and row["e2e_chunks"] == 2 and row["e2e_final_size"] == "128x128"
    assert row["e2e_total_s"] >= row["e2e_low_res_s"] + row["e2e_refine_s"] and row["e2e_video_fps"] > 0
    assert row["peak_rss_mb"] > 100
    append_history(config.history, row)
    table = append_history(config.history, {**row, "run_id": "second", "extra_figure": 1.0})
    assert table.num_rows == 2 and table.column("extra_figure").to_pylist() == [None, 1.0]


def test_the_step_flops_do_not_depend_on_the_device():
    config = BenchConfig(repeats=1, num_frames=0, stages=("init", "extend"))
    harness = Harness(config)
    on_meta = meta_step_flops("tiny")
    for stage in ("init", "extend"):
        assert harness.step(stage, Switches()).flops == on_meta[stage]


@pytest.mark.integration  # the whole `streamingt2v bench --flops-only` count at the paper's sizes
def test_real_size_step_flops_on_the_meta_device():
    flops = meta_step_flops("modelscope")
    # One guided step at 256x256x16 is several TFLOP; refine at the 1280x720 canvas, 24 frames, more.
    assert 5e12 < flops["init"] < flops["extend"] < flops["refine"]
    assert flops["econd"] < 0.05 * flops["extend"]  # what reusing E_cond saves per step, at most


def test_the_orchestration_figures_need_the_flows_layer():
    with pytest.raises(ConfigError) as err:  # measuring them runs a flow: flows.bench passes the measurement
        run(BenchConfig(orchestration=True, stages=("init",), num_frames=0))
    assert err.value.field == "orchestration"


def test_cpu_peak_is_measured_and_known_gpus_use_the_datasheet(monkeypatch):
    cpu = hardware.peak(torch.device("cpu"), torch.float32)
    assert cpu.source == "measured matmul" and cpu.flops > 1e8
    assert hardware.GPU_PEAKS["H100"]["bf16"] == 989e12


def test_op_rates_measure_each_kind_of_op():
    rates = hardware.op_rates(torch.device("cpu"), torch.float32, tokens=64, seconds=0.01)
    assert set(rates) == {"matmul", "linear", "conv3x3", "sdpa"} and all(rate > 0 for rate in rates.values())
