"""Training on Ray Train: a ``TorchTrainer`` runs :class:`training.run.TrainingRun` per worker.

Data: each worker w of W gets its own Ray Dataset of rows {s*B + w*B/W + i} for the steps still
to run (B the global batch), decoded/rendered by Ray Data on CPU workers and streamed to the
trainer; gradients are averaged across workers after each backward pass (gloo on CPU, NCCL on
GPUs). So the clips of every step are fixed by (seed, step), whatever W is.

Checkpoints: every ``checkpoint_every`` steps worker 0 reports a checkpoint (trainable weights,
optimiser, generator, step and loss history) to Ray Train, which stores it under
``run_dir/train`` (local or ``s3://``). Re-running the same command finds the newest complete
checkpoint there and continues from its step, so a crashed or cancelled run loses at most
``checkpoint_every`` steps and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from infra import storage
from models.errors import ConfigError, require
from training.run import STATE_FILE, TrainConfig, TrainingRun

RUN_NAME = "train"
CHECKPOINT_FILES = ("trainable.safetensors", "optimizer.pt", STATE_FILE)


@dataclass(frozen=True)
class RayTrainSettings:
    num_workers: int = 1
    use_gpu: bool = False
    accelerator_type: str | None = None  # e.g. "H100": pins workers to that GPU type
    cpus_per_worker: float = 1.0
    data_cpus: float = 0.5  # per decoding actor of each worker's dataset
    ray_address: str | None = None
    max_failures: int = 0  # worker failures Ray Train recovers from, from the last checkpoint
    report_every: int = 10

    def __post_init__(self) -> None:
        require(self.num_workers >= 1, "workers", self.num_workers, "an integer >= 1")
        require(self.report_every >= 1, "report_every", self.report_every, "an integer >= 1")


def latest_ray_checkpoint(run_dir: str) -> tuple[str, int] | None:
    """(URI, step) of the newest complete checkpoint Ray Train stored under ``run_dir``."""
    fs, root = storage.filesystem(storage.join(run_dir, RUN_NAME))
    fs.invalidate_cache()  # object-store listings are cached; Ray wrote through another client
    if not fs.exists(root):
        return None
    best = None
    for entry in fs.ls(root, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if not name.startswith("checkpoint_") or not all(fs.exists(f"{entry}/{f}") for f in CHECKPOINT_FILES):
            continue
        with fs.open(f"{entry}/{STATE_FILE}", "r") as f:
            step = json.load(f)["step"]
        if best is None or step > best[1]:
            best = (storage.join(run_dir, RUN_NAME, name), step)
    return best


def _storage_filesystem(run_dir: str):
    """Ray Train's storage for ``run_dir``: local paths as they are; object stores through
    fsspec (so s3fs settings such as AWS_ENDPOINT_URL apply as everywhere else)."""
    if "://" not in run_dir or run_dir.startswith("file://"):
        return os.path.abspath(run_dir.removeprefix("file://")), None
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(run_dir)
    return path, pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def _average_gradients(params: list[torch.nn.Parameter]) -> None:
    import torch.distributed as dist

    world = dist.get_world_size()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad /= world


def download_checkpoint(uri: str, local: Path) -> Path:
    """Copy the checkpoint at ``uri`` (any fsspec URI) into the local directory ``local``."""
    local.mkdir(parents=True, exist_ok=True)
    for name in CHECKPOINT_FILES:
        (local / name).write_bytes(storage.read_bytes(storage.join(uri, name)))
    return local


def train_worker(loop_config: dict) -> None:
    """``train_loop_per_worker``: resume, run the remaining steps, report, export."""
    import ray.train
    import ray.train.torch

    from training.data import to_model_input

    config = TrainConfig.from_dict(loop_config["config"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(max(1, int(loop_config.get("threads", 1))))
    run = TrainingRun(config, device=str(ray.train.torch.get_device()))
    # Ray Train restores the newest checkpoint of a run with the same name and storage path
    # (a re-run after a crash) or of this run (workers restarted after a failure).
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            run.load_checkpoint(directory)
    require(run.step >= loop_config["start_step"], "checkpoint", run.step,
            f"the newest checkpoint in storage (step {loop_config['start_step']})")
    skip = run.step - loop_config["start_step"]  # > 0 only after Ray restarted failed workers
    reduce = _average_gradients if world > 1 else None
    shard = ray.train.get_dataset_shard(f"train_{rank}")
    per_worker = config.batch_size // world
    loss = float("nan")
    for i, batch in enumerate(shard.iter_batches(batch_size=per_worker, batch_format="numpy")):
        if i < skip:
            continue
        if run.step >= config.steps:
            break
        loss = run.train_step(to_model_input(batch["frames"]), list(batch["caption"]), reduce)
        due = run.step % config.checkpoint_every == 0 or run.step == config.steps
        if due or run.step % loop_config["report_every"] == 0:
            metrics = run.metrics(loss)
            if due:
                with tempfile.TemporaryDirectory() as tmp:
                    if rank == 0:
                        run.save_checkpoint(tmp)
                    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank == 0
                                     else None)
            else:
                ray.train.report(metrics)
    if rank == 0 and loop_config.get("out"):
        calibration = None
        if config.stage == "vae":
            from training.data import local_batches

            calibration = next(local_batches(run.source(), 64))[0]
        export_model(run, loop_config["out"], calibration)


def export_model(run: TrainingRun, out: str, calibration_frames: torch.Tensor | None = None) -> None:
    """Export locally, or to a temp dir that is then uploaded to an object store."""
    if "://" not in out or out.startswith("file://"):
        run.export(out.removeprefix("file://"), calibration_frames)
        return
    with tempfile.TemporaryDirectory() as tmp:
        run.export(tmp, calibration_frames)
        for path in sorted(Path(tmp).rglob("*")):
            if path.is_file():
                storage.write_file(storage.join(out, str(path.relative_to(tmp))), path)


def train_on_ray(config: TrainConfig, run_dir: str, out: str | None = None,
                 settings: RayTrainSettings = RayTrainSettings()) -> dict:
    """Run (or resume) one training stage with a ``TorchTrainer``; returns the last metrics."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from training.data import ray_dataset, worker_rows

    require(config.batch_size % settings.num_workers == 0, "batch_size", config.batch_size,
            f"a multiple of the number of workers ({settings.num_workers})")
    if not ray.is_initialized():
        ray.init(address=settings.ray_address, include_dashboard=False, log_to_driver=False)
    source = TrainingRun.source_for(config)  # validates the data before any worker starts
    found = latest_ray_checkpoint(run_dir)
    start_step = found[1] if found else 0
    if start_step >= config.steps and out is None:
        return {"step": start_step, "loss": float("nan")}
    per_worker = config.batch_size // settings.num_workers
    datasets = {f"train_{w}": ray_dataset(source, worker_rows(per_worker, start_step, config.steps, w,
                                                              settings.num_workers),
                                          per_worker, settings.data_cpus)
                for w in range(settings.num_workers)}
    path, filesystem = _storage_filesystem(run_dir)
    resources = {"CPU": settings.cpus_per_worker}
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": config.to_dict(), "start_step": start_step, "out": out,
                           "report_every": settings.report_every, "threads": max(1, int(settings.cpus_per_worker))},
        scaling_config=ray.train.ScalingConfig(num_workers=settings.num_workers, use_gpu=settings.use_gpu,
                                               accelerator_type=settings.accelerator_type,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(name=RUN_NAME, storage_path=path, storage_filesystem=filesystem,
                                       failure_config=ray.train.FailureConfig(max_failures=settings.max_failures),
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=[]),
    )
    try:
        result = trainer.fit()
    except ray.exceptions.RayError as exc:  # a worker error surfaces as TrainingFailedError
        cause = exc.__cause__ or exc
        if isinstance(cause, ConfigError):
            raise cause from None
        raise
    metrics = dict(result.metrics or {})
    metrics.setdefault("step", start_step)
    metrics.setdefault("loss", float("nan"))
    return metrics
