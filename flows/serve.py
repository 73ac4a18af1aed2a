"""Serve the project's Prefect deployments from one long-running process.

    prefect server start --host 127.0.0.1 --port 4200            # or any Prefect API
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve
    prefect deployment run generate-batch/local -p prompts='["A camel resting on the snow field."]' --watch

Deployments:
* ``generate-batch/local``: local Ray cluster, ``tiny`` preset, output under ``outputs/batch``.
* ``generate-batch/gpu-cluster``: joins the running Ray cluster (``ray_address='auto'``), pools
  pinned as in ray_cluster.yaml (``pools='gpu'``), ``modelscope`` preset; its model locations are
  run parameters (``-p base_model=... -p streaming_model=... -p refiner=...``).
* ``train-streamingt2v/local`` and ``train-streamingt2v/gpu-cluster``: training stages on Ray
  Train (flows/train.py), e.g. ``-p stages='["cam", "cam_apm"]' -p init=BASE -p data=s3://.../clips.parquet
  -p run_uri=s3://.../runs/x -p steps='[400000, 1000]'``; the GPU one trains in bf16 with
  gradient checkpointing on the cluster's GPU workers.
* ``nightly-benchmark/nightly``: every day at 02:00 UTC, the paper's setting (App. F prompts, 240
  frames, metrics at 720x720, Sec. 5.2) on the GPU cluster with the ``modelscope`` preset, one run
  at a time (the history is rewritten whole). A scheduled run takes no ``-p``, so its model
  locations, output and history URIs are read when serving from the JSON object in
  ``$STREAMINGT2V_NIGHTLY_PARAMETERS``, e.g. ``{"base_model": "...", "streaming_model": "...",
  "refiner": "...", "history_uri": "s3://bucket/nightly/history.parquet",
  "metric_models": {"clip": "...", "aesthetic_mlp": "..."}}``.
* ``bench/nightly-gpu``: every day at 05:00 UTC (after the nightly benchmark), the performance
  harness at the real ``modelscope`` sizes with random weights in bf16 on a GPU, with the
  speed-up of each optimisation; ``bench/local``: the tiny preset on CPU with the Ray/Prefect
  overhead share.
"""

from __future__ import annotations

import json
import os

from prefect import serve
from prefect.schedules import Cron

from flows.bench import bench
from flows.generate_batch import generate_batch
from flows.nightly_benchmark import nightly_benchmark
from flows.train import train_streamingt2v
from models.errors import require

NIGHTLY_PARAMETERS_ENV = "STREAMINGT2V_NIGHTLY_PARAMETERS"
NIGHTLY_CRON = "0 2 * * *"
BENCH_CRON = "0 5 * * *"


def nightly_parameters() -> dict:
    """The nightly run's parameters: the paper's setting on the GPU cluster, overridden by
    ``$STREAMINGT2V_NIGHTLY_PARAMETERS`` (model locations, URIs)."""
    defaults = {"prompt_set": "paper", "num_frames": 240, "flow_size": 720, "preset": "modelscope",
                "ray_address": "auto", "pools": "gpu", "device": "cuda", "dtype": "float16",
                "output_uri": "outputs/nightly", "history_uri": "outputs/nightly/history.parquet"}
    overrides = json.loads(os.environ.get(NIGHTLY_PARAMETERS_ENV, "{}"))
    require(isinstance(overrides, dict), NIGHTLY_PARAMETERS_ENV, overrides,
            "a JSON object of nightly-benchmark parameters")
    return {**defaults, **overrides}


def deployments() -> list:
    return [
        generate_batch.to_deployment(name="local", parameters={"output_uri": "outputs/batch", "preset": "tiny"},
                                     concurrency_limit=1),
        generate_batch.to_deployment(name="gpu-cluster", parameters={"ray_address": "auto", "pools": "gpu",
                                                                     "preset": "modelscope", "device": "cuda",
                                                                     "dtype": "float16"}),
        train_streamingt2v.to_deployment(name="local", parameters={"run_uri": "outputs/train", "preset": "tiny"},
                                         concurrency_limit=1),
        train_streamingt2v.to_deployment(name="gpu-cluster", parameters={
            "ray_address": "auto", "preset": "modelscope", "use_gpu": True, "mixed_precision": "bf16",
            "gradient_checkpointing": True}, concurrency_limit=1),
        nightly_benchmark.to_deployment(name="nightly", schedule=Cron(NIGHTLY_CRON, timezone="UTC"),
                                        parameters=nightly_parameters(), concurrency_limit=1),
        bench.to_deployment(name="nightly-gpu", schedule=Cron(BENCH_CRON, timezone="UTC"), concurrency_limit=1,
                            parameters={"preset": "modelscope", "weights": "random", "device": "cuda",
                                        "dtype": "bfloat16", "num_frames": 240, "ablations": True,
                                        "history_uri": "outputs/bench/history.parquet"}),
        bench.to_deployment(name="local", parameters={"preset": "tiny", "num_frames": 48, "orchestration": True},
                            concurrency_limit=1),
    ]


if __name__ == "__main__":
    serve(*deployments())
