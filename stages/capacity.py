"""Capacity planning: the pool sizes per GPU type that balance init, extend and refine for a target
of videos per hour, checked by a discrete-event simulation of the engine's own scheduling policy.

What one video costs, in seconds of one actor (its GPU), from seconds per denoising step:

    init    1 chunk            x steps                      x s_init     (+ overhead)
    extend  (chunks - 1)       x steps                      x s_extend   (+ overhead)
    refine  refine chunks m    x SDEdit steps (from T' = 600) x s_refine   (+ overhead)

The chunk counts are the product's own chunk plans for the preset and length. The engine refines
each video pipeline-parallel on one group of g refine actors (``refine_concurrency`` groups), so
one video's refinement takes ceil(m / g) x SDEdit steps x s_refine.

The simulation runs :class:`stages.scheduling.Scheduler` (the policy the engine applies) with
those durations: the same back-pressure, the same dispatch order (init, then extend, then
refine, whenever a worker is free).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field, replace
from typing import Any

from models.errors import ConfigError, require
from models.presets import REFINE_GEOMETRY, get_preset
from models.refinement import RefineConfig
from models.request import GenerationRequest
from stages.refine import refine_layout
from stages.scheduling import STAGE_ORDER, Scheduler

HOUR = 3600.0


@dataclass(frozen=True)
class Workload:
    """The videos to make: preset, length and step counts (GenerationRequest's parameters)."""

    preset: str = "modelscope"
    num_frames: int = 240
    steps: int = 50
    refine_steps: int = 50
    refine: bool = True

    def request(self) -> GenerationRequest:
        return GenerationRequest("capacity plan", num_frames=self.num_frames, num_inference_steps=self.steps,
                                 refine_steps=self.refine_steps, refine=self.refine, preset=self.preset)

    def steps_per_video(self) -> dict[str, Any]:
        """Denoising steps of one video per stage, and the refine chunk count and steps per chunk."""
        preset = get_preset(self.preset)
        chunks = len(preset.extend_plan(self.num_frames))
        refine_plan, sdedit = refine_layout(RefineConfig(**REFINE_GEOMETRY[self.preset]), preset.schedule,
                                            self.request())
        return {"init": self.steps, "extend": (chunks - 1) * self.steps, "chunks": chunks,
                "refine_chunks": len(refine_plan), "refine_chunk_steps": sdedit}

    def actor_steps(self) -> dict[str, int]:
        """Denoising steps one video costs each stage's actors in all (refine: every chunk's)."""
        steps = self.steps_per_video()
        return {"init": steps["init"], "extend": steps["extend"],
                "refine": steps["refine_chunks"] * steps["refine_chunk_steps"]}


@dataclass(frozen=True)
class Speeds:
    """Seconds per denoising step of each stage on each GPU type (``streamingt2v bench``'s
    ``<stage>_step_s``, or the FLOP model at a stated MFU), optional seconds of overhead per video
    and stage (decoding, storage), and optional prices per GPU-hour."""

    step_s: dict[str, dict[str, float]]  # stage -> GPU type -> seconds per step
    overhead_s: dict[str, float] = field(default_factory=dict)  # stage -> seconds per video
    price_per_hour: dict[str, float] = field(default_factory=dict)  # GPU type -> price

    def __post_init__(self) -> None:
        for stage in STAGE_ORDER:
            require(stage in self.step_s and self.step_s[stage], f"step_s.{stage}", self.step_s.get(stage),
                    "seconds per step on at least one GPU type")
            for gpu, seconds in self.step_s[stage].items():
                require(math.isfinite(seconds) and seconds > 0, f"step_s.{stage}.{gpu}", seconds,
                        "a positive number of seconds")

    @classmethod
    def from_flops(cls, tflop_per_step: dict[str, float], peak_tflops: dict[str, float], mfu: float,
                   **kwargs) -> "Speeds":
        """Seconds per step from each stage's TFLOP per step (``<stage>_step_tflop`` of ``bench``)
        and each GPU type's peak TFLOP/s at ``mfu`` (the model FLOP utilisation reached)."""
        require(0 < mfu <= 1, "mfu", mfu, "a number in (0, 1]")
        return cls({stage: {gpu: flop / (peak * mfu) for gpu, peak in peak_tflops.items()}
                    for stage, flop in tflop_per_step.items()}, **kwargs)


@dataclass(frozen=True)
class PoolPlan:
    """Pools per stage (GPU type and actors), refine groups, and what the plan delivers."""

    gpu_type: dict[str, str]
    size: dict[str, int]
    refine_concurrency: int
    stage_s: dict[str, float]  # seconds one video holds one worker (refine: one group)
    videos_per_hour: float  # the slowest stage's capacity
    cost_per_video: float | None

    @property
    def gpus(self) -> int:
        return sum(self.size.values())

    def to_cluster(self) -> dict[str, Any]:
        """The pools as a cluster config (``--pools`` YAML; infra/cluster.py), one GPU per actor."""
        return {stage: {"size": self.size[stage], "num_gpus": 1, "accelerator_types": [self.gpu_type[stage]]}
                for stage in self.size}


def stage_seconds(workload: Workload, speeds: Speeds, gpu_type: dict[str, str], refine_group: int) -> dict[str, float]:
    """Seconds one video holds a worker of each stage (refine: a group of ``refine_group`` actors)."""
    steps = workload.steps_per_video()
    out = {stage: steps[stage] * speeds.step_s[stage][gpu_type[stage]] + speeds.overhead_s.get(stage, 0.0)
           for stage in ("init", "extend")}
    if workload.refine:
        rounds = math.ceil(steps["refine_chunks"] / refine_group)
        out["refine"] = (rounds * steps["refine_chunk_steps"] * speeds.step_s["refine"][gpu_type["refine"]]
                         + speeds.overhead_s.get("refine", 0.0))
    return out


def plan_pools(workload: Workload, speeds: Speeds, videos_per_hour: float) -> PoolPlan:
    """The smallest pools that make ``videos_per_hour``: per stage the GPU type with the lowest cost
    per video (with prices) or the fastest step, then ceil(target x actor-seconds / 3600) actors;
    for refine the group size g (a video refines on g actors in ceil(m / g) rounds) that needs the
    fewest actors in all, the larger group on a tie (a shorter wait for each video)."""
    require(math.isfinite(videos_per_hour) and videos_per_hour > 0, "videos_per_hour", videos_per_hour,
            "a positive number")
    work = workload.actor_steps()
    stages = STAGE_ORDER if workload.refine else STAGE_ORDER[:2]

    def per_video(stage: str, gpu: str) -> float:  # actor-seconds of one video
        return work[stage] * speeds.step_s[stage][gpu] + speeds.overhead_s.get(stage, 0.0)

    def cost(stage: str, gpu: str) -> float:
        price = speeds.price_per_hour.get(gpu)
        return per_video(stage, gpu) * (price if speeds.price_per_hour and price is not None else 1.0)

    gpu_type = {}
    for stage in stages:
        if speeds.price_per_hour and (missing := set(speeds.step_s[stage]) - set(speeds.price_per_hour)):
            raise ConfigError("price_per_hour", sorted(missing), "a price for every GPU type with speeds")
        gpu_type[stage] = min(speeds.step_s[stage], key=lambda gpu: (cost(stage, gpu), gpu))
    size = {stage: max(1, math.ceil(videos_per_hour * per_video(stage, gpu_type[stage]) / HOUR)) for stage in stages}
    concurrency = 1
    if workload.refine:  # the fewest refine actors: groups of g actors, as many groups as the target needs
        def groups(g: int) -> int:
            return max(1, math.ceil(videos_per_hour * stage_seconds(workload, speeds, gpu_type, g)["refine"] / HOUR))

        group = min(range(1, workload.steps_per_video()["refine_chunks"] + 1), key=lambda g: (groups(g) * g, -g))
        concurrency = groups(group)
        size["refine"] = concurrency * group
    plan = plan_for(workload, speeds, size, gpu_type, concurrency)
    if not speeds.price_per_hour:
        return plan
    cost = sum(size[s] * speeds.price_per_hour[gpu_type[s]] for s in stages) / plan.videos_per_hour
    return replace(plan, cost_per_video=cost)


def plan_for(workload: Workload, speeds: Speeds, size: dict[str, int], gpu_type: dict[str, str] | None = None,
             refine_concurrency: int = 1) -> PoolPlan:
    """The plan of given pools (e.g. a cluster config's), to simulate them."""
    stages = STAGE_ORDER if workload.refine else STAGE_ORDER[:2]
    gpu_type = gpu_type or {stage: next(iter(speeds.step_s[stage])) for stage in stages}
    group = size["refine"] // refine_concurrency if workload.refine else 1
    seconds = stage_seconds(workload, speeds, gpu_type, group)
    slots = {stage: (refine_concurrency if stage == "refine" else size[stage]) for stage in stages}
    capacity = min(HOUR * slots[stage] / seconds[stage] for stage in stages)
    return PoolPlan(gpu_type, {s: size[s] for s in stages}, refine_concurrency, seconds, capacity, None)


@dataclass
class Simulation:
    """What the simulated batch did: wall time, each pool's busy share, queue lengths over time."""

    videos: int
    wall_s: float
    utilisation: dict[str, float]
    queue: list[tuple[float, dict[str, int]]]  # (time, videos waiting per stage) at every change
    latency_s: list[float]

    @property
    def videos_per_hour(self) -> float:
        return HOUR * self.videos / self.wall_s if self.wall_s else 0.0


def simulate(plan: PoolPlan, videos: int, max_in_flight: int = 3, arrivals_per_hour: float | None = None,
             interactive_every: int = 0, interactive_share: float = 0.75) -> Simulation:
    """Run ``videos`` through pools of ``plan`` with the engine's policy: all submitted at once (a
    batch), or arriving evenly at ``arrivals_per_hour``. ``interactive_every`` > 0 marks every
    n-th video as an interactive request."""
    require(videos >= 1, "videos", videos, "an integer >= 1")
    stages = tuple(plan.stage_s)
    refine = "refine" in stages
    policy = Scheduler(max_in_flight, interactive_share)
    free = {stage: (plan.refine_concurrency if stage == "refine" else plan.size[stage]) for stage in stages}
    slots = dict(free)
    busy = dict.fromkeys(stages, 0.0)
    events: list[tuple[float, int, str, Any]] = []
    seq = 0

    def push(t: float, kind: str, payload: Any) -> None:
        nonlocal seq
        heapq.heappush(events, (t, seq, kind, payload))
        seq += 1

    gap = HOUR / arrivals_per_hour if arrivals_per_hour else 0.0
    for v in range(videos):
        push(v * gap, "arrive", v)
    arrived: dict[int, float] = {}
    latency, queue = [], []
    now = 0.0
    while events:
        now, _, kind, payload = heapq.heappop(events)
        if kind == "arrive":
            arrived[payload] = now
            interactive = interactive_every > 0 and payload % interactive_every == 0
            policy.add(payload, "init", "interactive" if interactive else "batch", refine)
        else:
            stage, v = payload
            free[stage] += 1
            if policy.finish(v, stage) is None:
                latency.append(now - arrived[v])
        if events and events[0][0] == now:
            continue  # everything that happens at this instant first, as the engine's loop sees it
        for stage in stages:  # the engine's dispatch order
            while free[stage] and (v := policy.start(stage)) is not None:
                free[stage] -= 1
                busy[stage] += plan.stage_s[stage]
                push(now + plan.stage_s[stage], "done", (stage, v))
        queue.append((now, {stage: policy.waiting(stage) for stage in stages}))
    utilisation = {stage: busy[stage] / (slots[stage] * now) if now else 0.0 for stage in stages}
    return Simulation(videos, now, utilisation, queue, latency)


def plot_queues(sim: Simulation, path: str, title: str = "") -> None:
    """Videos waiting over time (step plots): for init (the backlog of a batch) above, for the
    later stages below; each pool's utilisation in the legends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(sim.utilisation)
    fig, axes = plt.subplots(2, 1, figsize=(8, 5), dpi=120, sharex=True)
    times = [t / HOUR for t, _ in sim.queue]
    for ax, shown in zip(axes, (stages[:1], stages[1:])):
        for stage in shown:
            ax.step(times, [q[stage] for _, q in sim.queue], where="post",
                    label=f"{stage} (busy {100 * sim.utilisation[stage]:.0f}%)")
        ax.set_ylabel("videos waiting")
        ax.legend(loc="upper right")
    axes[-1].set_xlabel("hours")
    axes[0].set_title(title or f"{sim.videos} videos, {sim.videos_per_hour:.1f} per hour")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
