"""Prefect flow ``train-streamingt2v``: one or more training stages on Ray Train.

    prefect deployment run train-streamingt2v/<deployment> -p stages='["cam"]' -p init=BASE_DIR \\
        -p data=s3://bucket/clips.parquet -p run_uri=s3://bucket/runs/cam -p steps=400000

Stages run in the given order (e.g. ``["cam", "cam_apm"]``, the paper's two stages); each one
starts from the previous one's exported model. A stage's checkpoints live under
``run_uri/<stage>`` and its model under ``run_uri/<stage>/model``; re-running the flow resumes
every stage from its newest checkpoint (a finished stage is only re-exported). A later stage's
checkpoints live under ``run_uri/<stage>/from/<version of the earlier stage's model>``: when an
earlier stage was trained further (more ``steps``), the later stages start afresh from its new
model instead of continuing weights trained on the old one. (Checkpoints also record a
fingerprint of their init model; ``streamingt2v train`` refuses to resume after it changed.) The
loss curve of each stage becomes a Prefect table artifact.

A ``clip`` stage (a CLIP trained on the data, where no released one fits) starts from scratch and
is not the next stage's init: the stages after it embed APM's anchor with its image tower
(``image_encoder``), e.g. ``["clip", "cam", "cam_apm"]`` with ``init`` the Video-LDM.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from pydantic import Field

from infra import storage
from infra.params import takes_parameters
from models.errors import require
from training.objectives import CONDITIONED_STAGES, STAGES
from training.ray_train import RayTrainSettings, train_on_ray
from training.run import TrainConfig

StageName = Literal[STAGES]
FLOW_SETS = ("stage", "steps", "init")  # per stage, from the flow's stages, steps and init
VIDEO_STAGES = tuple(stage for stage in STAGES if stage != "clip")
STAGE_OPTIONS: dict[str, tuple[str, ...]] = {
    "gradient_checkpointing": VIDEO_STAGES, "dropout_text": VIDEO_STAGES, "dropout_anchor": VIDEO_STAGES,
    "dropout_both": VIDEO_STAGES, "timestep_sampling": VIDEO_STAGES, "offset_noise": VIDEO_STAGES,
    "train_text_encoder": ("base",), "tokenizer": ("base",), "cond_frames": ("conc_cond",),
    "decoded_condition": CONDITIONED_STAGES, "condition_noise": CONDITIONED_STAGES,
    "image_encoder": CONDITIONED_STAGES, "control_text": ("cam",), "main_branch": ("cam",),
    "apm_lr": ("cam_apm",), "apm_only": ("cam_apm",), "upscaled_input": ("refiner",),
}
"""The stages of a run an option applies to; the other stages train with its default (e.g.
``main_branch="spatial"`` in ``["cam", "cam_apm"]`` trains stage 1 so, and stage 2 as the paper
does). An option not named here applies to every stage."""


@task
def train_stage(config: TrainConfig, run_uri: str, out: str, settings: RayTrainSettings) -> dict:
    metrics = train_on_ray(config, run_uri, out, settings)
    get_run_logger().info("stage %s: step %s, loss %.4f%s", config.stage, metrics.get("step"), metrics.get("loss"),
                          f", APM gate {metrics['apm_gate']:.4f}" if "apm_gate" in metrics else "")
    return metrics


def stage_steps(stages: list[str], steps: int | list[int]) -> list[int]:
    counts = [steps] * len(stages) if isinstance(steps, int) else list(steps)
    require(len(counts) == len(stages), "steps", steps, f"one integer, or one per stage ({len(stages)})")
    return counts


def stage_configs(stages: list[str], counts: list[int], init: str | None, run_uri: str,
                  options: dict) -> list[TrainConfig]:
    """Each stage's config (validated, so a bad option fails before any stage trains): the
    options that apply to it (:data:`STAGE_OPTIONS`), started from the previous stage's model."""
    options, configs, previous = dict(options), [], init
    for stage, n in zip(stages, counts):
        values = {name: value for name, value in options.items() if stage in STAGE_OPTIONS.get(name, STAGES)}
        if stage == "clip":  # trained from scratch; later stages embed their anchors with it
            configs.append(TrainConfig.from_dict({**values, "stage": stage, "steps": n}))
            options["image_encoder"] = storage.join(run_uri, stage, "model")
            continue
        configs.append(TrainConfig.from_dict({**values, "stage": stage, "steps": n, "init": previous}))
        previous = storage.join(run_uri, stage, "model")
    return configs


def lineage(model_uri: str) -> str:
    """The version of an exported model under which the later stages keep their checkpoints: a
    hash of its ``training.json``, with the config in the flat form every export had before the
    ``beyond`` group (so that a run re-exported since keeps its lineage, and its later stages resume)."""
    record = json.loads(storage.read_bytes(storage.join(model_uri, "training.json")))
    if "beyond" in record["config"]:
        record["config"] = TrainConfig.from_dict(record["config"]).flat_dict()
    return hashlib.sha256(json.dumps(record).encode()).hexdigest()[:16]


def loss_curve(model_uri: str, points: int = 200) -> list[dict]:
    """At most ``points`` (step, loss) rows of the exported model's training history, each the
    mean loss of its stretch of steps."""
    history = json.loads(storage.read_bytes(storage.join(model_uri, "training.json")))["history"]
    stride = max(1, -(-len(history) // points))
    return [{"step": history[min(i + stride, len(history)) - 1][0],
             "loss": sum(h[1] for h in history[i:i + stride]) / len(history[i:i + stride])}
            for i in range(0, len(history), stride)]


@flow(name="train-streamingt2v", log_prints=True)
@takes_parameters(TrainConfig, into="options", exclude=FLOW_SETS)
def train_streamingt2v(
    stages: list[StageName],
    run_uri: str,
    steps: int | list[int] = 1000,
    init: str | None = None,
    num_workers: Annotated[int, Field(ge=1)] = 1,
    use_gpu: bool = False,
    accelerator_type: str | None = None,
    ray_address: str | None = None,
    options: dict | None = None,
) -> dict[str, dict]:
    """Train ``stages`` in order; returns each stage's final metrics and model URI. Every
    :class:`TrainConfig` option but ``stage``, ``steps`` and ``init`` is a parameter too."""
    require(len(stages) >= 1, "stages", stages, "a non-empty list of stages")
    configs = stage_configs(list(stages), stage_steps(list(stages), steps), init, run_uri, options or {})
    settings = RayTrainSettings(num_workers=num_workers, use_gpu=use_gpu, accelerator_type=accelerator_type,
                                ray_address=ray_address)
    results, version = {}, None
    for config in configs:
        stage_uri = storage.join(run_uri, config.stage)
        out = storage.join(stage_uri, "model")
        # A stage trained on an earlier stage's result keeps its checkpoints per version of that
        # result: resumed while it is unchanged, started afresh (old checkpoints kept) once the
        # earlier stage has trained further.
        run_dir = stage_uri if version is None else storage.join(stage_uri, "from", version)
        metrics = train_stage(config, run_dir, out, settings)
        version = lineage(out)
        results[config.stage] = {**metrics, "model": out}
        create_table_artifact(key=f"train-{config.stage.replace('_', '-')}", table=loss_curve(out),
                              description=f"training stage {config.stage}: loss curve, model at {out}")
    return results

