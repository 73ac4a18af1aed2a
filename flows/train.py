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
from models.cam import CONTROL_TEXTS
from models.errors import require
from training.objectives import CONDITIONED_STAGES, MAIN_BRANCH_MODES, STAGES, TIMESTEP_SAMPLING, Dropout
from training.ray_train import RayTrainSettings, train_on_ray
from training.run import PRECISIONS, TrainConfig

# The parameter schema's choices, from the tuples TrainConfig validates against.
StageName = Literal[STAGES]
Precision = Literal[PRECISIONS]
TimestepSampling = Literal[TIMESTEP_SAMPLING]
ControlText = Literal[CONTROL_TEXTS]
MainBranch = Literal[MAIN_BRANCH_MODES]


@task
def train_stage(config: TrainConfig, run_uri: str, out: str, settings: RayTrainSettings) -> dict:
    metrics = train_on_ray(config, run_uri, out, settings)
    get_run_logger().info("stage %s: step %s, loss %.4f%s", config.stage, metrics.get("step"), metrics.get("loss"),
                          f", APM gate {metrics['apm_gate']:.4f}" if "apm_gate" in metrics else "")
    return metrics


def stage_steps(stages: list[str], steps: int | list[int]) -> list[int]:
    counts = [steps] * len(stages) if isinstance(steps, int) else list(steps)
    require(len(counts) == len(stages), "steps", steps, f"one integer, or one per stage ({len(stages)})")
    for i, n in enumerate(counts):
        require(n >= 1, f"steps[{i}]", n, "an integer >= 1")
    return counts


def loss_curve(model_uri: str, points: int = 200) -> list[dict]:
    """At most ``points`` (step, loss) rows of the exported model's training history, each the
    mean loss of its stretch of steps."""
    history = json.loads(storage.read_bytes(storage.join(model_uri, "training.json")))["history"]
    stride = max(1, -(-len(history) // points))
    return [{"step": history[min(i + stride, len(history)) - 1][0],
             "loss": sum(h[1] for h in history[i:i + stride]) / len(history[i:i + stride])}
            for i in range(0, len(history), stride)]


@flow(name="train-streamingt2v", log_prints=True)
def train_streamingt2v(
    stages: list[StageName],
    run_uri: str,
    steps: int | list[int] = 1000,
    init: str | None = None,
    data: str = "toyworld",
    preset: Literal["tiny", "modelscope"] = "tiny",
    fps: Annotated[float, Field(gt=0, le=120)] = 3.0,
    batch_size: Annotated[int, Field(ge=1)] = 8,
    lr: Annotated[float, Field(gt=0, le=1.0)] = 5e-5,
    warmup_steps: Annotated[int, Field(ge=0)] = 0,
    decay_steps: Annotated[int, Field(ge=0)] = 0,
    seed: Annotated[int, Field(ge=0)] = 0,
    checkpoint_every: Annotated[int, Field(ge=1)] = 100,
    mixed_precision: Precision = "no",
    gradient_checkpointing: bool = False,
    train_text_encoder: bool = False,
    dropout_text: Annotated[float, Field(ge=0, le=1)] = 0.05,
    dropout_anchor: Annotated[float, Field(ge=0, le=1)] = 0.05,
    dropout_both: Annotated[float, Field(ge=0, le=1)] = 0.05,
    timestep_sampling: TimestepSampling = "uniform",
    offset_noise: Annotated[float, Field(ge=0, le=1)] = 0.0,
    decoded_condition: bool = False,
    condition_noise: Annotated[float, Field(ge=0, le=1)] = 0.0,
    apm_lr: Annotated[float, Field(gt=0, le=1.0)] | None = None,
    control_text: ControlText | None = None,
    main_branch: MainBranch = "frozen",
    apm_only: bool = False,
    image_encoder: str | None = None,
    num_workers: Annotated[int, Field(ge=1)] = 1,
    use_gpu: bool = False,
    accelerator_type: str | None = None,
    ray_address: str | None = None,
) -> dict[str, dict]:
    """Train ``stages`` in order; returns each stage's final metrics and model URI."""
    require(len(stages) >= 1, "stages", stages, "a non-empty list of stages")
    counts = stage_steps(list(stages), steps)
    dropout = Dropout(text=dropout_text, anchor=dropout_anchor, both=dropout_both)
    settings = RayTrainSettings(num_workers=num_workers, use_gpu=use_gpu, accelerator_type=accelerator_type,
                                ray_address=ray_address)
    configs, previous = [], init
    for stage, n in zip(stages, counts):  # validate every stage before training any
        common = dict(stage=stage, steps=n, preset=preset, data=data, fps=fps, batch_size=batch_size, lr=lr,
                      warmup_steps=warmup_steps, decay_steps=decay_steps, seed=seed,
                      checkpoint_every=checkpoint_every, mixed_precision=mixed_precision)
        if stage == "clip":  # trained from scratch; later stages embed their anchors with it
            configs.append(TrainConfig(**common))
            image_encoder = storage.join(run_uri, stage, "model")
            continue
        configs.append(TrainConfig(**common, init=previous, gradient_checkpointing=gradient_checkpointing,
                                   train_text_encoder=train_text_encoder and stage == "base", dropout=dropout,
                                   timestep_sampling=timestep_sampling, offset_noise=offset_noise,
                                   decoded_condition=decoded_condition and stage in CONDITIONED_STAGES,
                                   condition_noise=condition_noise if stage in CONDITIONED_STAGES else 0.0,
                                   apm_lr=apm_lr if stage == "cam_apm" else None,
                                   control_text=control_text if stage == "cam" else None,
                                   main_branch=main_branch if stage == "cam" else "frozen",
                                   apm_only=apm_only and stage == "cam_apm",
                                   image_encoder=image_encoder if stage in CONDITIONED_STAGES else None))
        previous = storage.join(run_uri, stage, "model")
    results, lineage = {}, None
    for config in configs:
        stage_uri = storage.join(run_uri, config.stage)
        out = storage.join(stage_uri, "model")
        # A stage trained on an earlier stage's result keeps its checkpoints per version of that
        # result: resumed while it is unchanged, started afresh (old checkpoints kept) once the
        # earlier stage has trained further.
        run_dir = stage_uri if lineage is None else storage.join(stage_uri, "from", lineage)
        metrics = train_stage(config, run_dir, out, settings)
        lineage = hashlib.sha256(storage.read_bytes(storage.join(out, "training.json"))).hexdigest()[:16]
        results[config.stage] = {**metrics, "model": out}
        create_table_artifact(key=f"train-{config.stage.replace('_', '-')}", table=loss_curve(out),
                              description=f"training stage {config.stage}: loss curve, model at {out}")
    return results

