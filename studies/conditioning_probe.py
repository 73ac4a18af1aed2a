"""How well an extension model (CAM, or the Conc-Cond baseline of App. D.1) carries its
conditioning frames across a chunk join, on real toy clips of the held-out prompts::

    python -m studies.conditioning_probe toyworld/weights/ablation/cam toyworld/weights/ablation/conc_cond

Training and inference both make an extension chunk re-cover its F_cond conditioning frames as
its first F_cond frames (the reference implementation appends only the rest), so a model that
carries its condition reproduces those frames, and the chunk joins without a jump.

* :func:`teacher_forced`: noise a real 16-frame clip to a fixed t and read the x0 error (latent
  MSE) of the model's prediction on the re-covered and on the new frames, given the clip's own
  conditioning frames, another clip's, or none (zeros), and under classifier-free guidance on
  text (Eq. 13 without the anchor term: eps_null + w (eps_text - eps_null), the CAM ablation's
  guidance; w = 0 is the null-text branch alone). A condition the model uses makes "own" far
  better than "other" and "zero"; a model whose text and null branches err differently loses
  accuracy as w grows. The guidance direction itself, eps_text - eps_null, is measured on the
  same frames in x0 units ((1 - a_t) / a_t times its mean square): w multiplies it, so on the
  re-covered frames, which the condition alone determines, it should be near zero.
* :func:`one_chunk`: sample one extension chunk (DDIM, eta 1) from the clip's first F_cond frames
  and measure, in pixels (0-255), the re-covered frames' error, the object's offset on them (the
  captioned colour's centroid on the torus of the toy world's wrapping motion), and the join: the
  change from the last conditioning frame to the first new frame, against the mean change
  between new frames.

The conditioning frames are the clip after a VAE round trip, as generated frames are. The
teacher-forced target is, with ``--target reencoded`` (the default), the latents of those
frames; with ``--target source``, the latents they were decoded from, which is the situation at
a chunk join in sampling: the previous chunk's latents are decoded, the new chunk is conditioned
on those frames (Conc-Cond: re-encoded), and the chunk joins without a jump when it re-covers the
previous latents themselves. The two differ by one VAE round trip; a model
trained with ``--decoded-condition`` learns the source target.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace

import numpy as np
import torch

from infra.video_io import from_uint8, to_uint8
from models.errors import ConfigError, require
from models.guidance import GuidanceWeights
from models.seeding import stream
from models.streaming_t2v import StreamingT2V
from toyworld.dataset import HELD_OUT
from toyworld.scenes import COLOURS, render
from toyworld.tracking import centroid, torus_distance

CONDITIONS = ("own", "other", "zero")
TARGETS = ("reencoded", "source")


@dataclass(frozen=True)
class ProbeConfig:
    num_clips: int = 4  # held-out prompts, each a clip with a random start (seed below)
    timesteps: tuple[int, ...] = (200, 500, 800, 950)
    cfg_weights: tuple[float, ...] = (0.0, 1.0, 3.0, 7.5)
    guidance: float = 7.5  # of the sampled chunk
    steps: int = 25  # DDIM steps of the sampled chunk
    seed: int = 777
    fps: float = 10.0
    target: str = "reencoded"  # teacher-forced target latents (module docstring)

    def __post_init__(self) -> None:
        require(1 <= self.num_clips <= len(HELD_OUT), "num_clips", self.num_clips, f"an integer in [1, {len(HELD_OUT)}]")
        require(len(self.timesteps) >= 1 and all(0 <= t <= 999 for t in self.timesteps), "timesteps",
                self.timesteps, "timesteps in [0, 999]")
        require(all(w >= 0 for w in self.cfg_weights), "cfg_weights", self.cfg_weights, "weights >= 0")
        require(self.guidance >= 0, "guidance", self.guidance, ">= 0")
        require(self.steps >= 1, "steps", self.steps, "an integer >= 1")
        require(self.target in TARGETS, "target", self.target, f"one of {TARGETS}")


def probe_clips(model: StreamingT2V, config: ProbeConfig) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Clips (n, 3, F, H, W) in [-1, 1], VAE round-tripped, of the first ``num_clips`` held-out
    scenes at random start positions; the latents they were decoded from; those scenes."""
    rng = np.random.default_rng(config.seed)
    video = model.video
    scenes = [replace(s, start=(float(rng.random()), float(rng.random()))) for s in HELD_OUT[:config.num_clips]]
    clips = [render(s, video.frames_per_chunk, config.fps, video.height) for s in scenes]
    x = torch.cat([from_uint8(c) for c in clips])
    with torch.no_grad():
        source = model.encode(x.to(model.device, model.dtype))
        return model.decode(source).float().cpu(), source, scenes


def _mean_square_split(x: torch.Tensor, k: int) -> tuple[float, float]:
    """Mean square of latents (n, c, F, h, w) over the first ``k`` frames and over the rest."""
    per_frame = (x.float() ** 2).mean(dim=(0, 1, 3, 4)).cpu()
    return float(per_frame[:k].mean()), float(per_frame[k:].mean())


@torch.no_grad()
def teacher_forced(model: StreamingT2V, clips: torch.Tensor, captions: list[str],
                   config: ProbeConfig, source: torch.Tensor | None = None) -> list[dict]:
    """One row per (t, condition, w): x0 MSE of the re-covered and of the new frames; the "own"
    rows also carry the guidance direction's x0-space mean square (module docstring). The target
    is ``source`` (the latents ``clips`` were decoded from) for ``config.target == "source"``,
    else the clips' own latents."""
    k, n = model.cond_frames, clips.shape[0]
    if config.target == "source":
        require(source is not None, "source", None, "the latents the clips were decoded from (target 'source')")
        latents = source
    else:
        latents = model.encode(clips.to(model.device, model.dtype))
    text, null = model.encode_prompt(captions), model.encode_prompt([""] * n)
    scheduler = model.schedule.make_scheduler()
    generator = torch.Generator().manual_seed(config.seed)
    frames = {"own": clips[:, :, :k], "other": clips.roll(1, dims=0)[:, :, :k], "zero": torch.zeros_like(clips[:, :, :k])}
    rows = []
    for t in config.timesteps:
        eps = torch.randn(latents.shape, generator=generator).to(latents)
        steps = torch.full((n,), t, device=latents.device)
        noisy = scheduler.add_noise(latents, eps, steps)
        a = scheduler.alphas_cumprod[t].to(latents)
        for name in CONDITIONS:
            cond = model.condition(frames[name])
            eps_text = model.unet(noisy, steps, text, None, cond)
            eps_null = model.unet(noisy, steps, null, None, cond) if name == "own" else None
            direction = {}
            if eps_null is not None:
                recovered, new = _mean_square_split(eps_text - eps_null, k)
                scale = float((1 - a) / a)
                direction = {"direction_recovered": recovered * scale, "direction_new": new * scale}
            for w in (config.cfg_weights if name == "own" else (1.0,)):
                e = eps_text if eps_null is None else eps_null + w * (eps_text - eps_null)
                x0 = (noisy - (1 - a).sqrt() * e) / a.sqrt()
                recovered, new = _mean_square_split(x0 - latents, k)
                rows.append({"t": t, "condition": name, "w": w, "recovered": recovered, "new": new, **direction})
    return rows


@torch.no_grad()
def one_chunk(model: StreamingT2V, clips: torch.Tensor, scenes: list, config: ProbeConfig) -> list[dict]:
    """One row per clip: re-cover error, object offset, join jump and inner change (pixels)."""
    k = model.cond_frames
    rows = []
    for i, scene in enumerate(scenes):
        latents = model.sample_chunk([scene.caption], None, clips[i:i + 1, :, :k].to(model.device, model.dtype),
                                     [stream(0, "probe", i)], GuidanceWeights(config.guidance, config.guidance),
                                     None, config.steps)
        out = model.decode(latents).float().cpu()
        truth, made = to_uint8(clips[i]).astype(float), to_uint8(out).astype(float)
        colour, size = COLOURS[scene.colour], truth.shape[2:0:-1]
        offsets = [torus_distance(p, q, size) for p, q in
                   ((centroid(truth[f], colour), centroid(made[f], colour)) for f in range(k))
                   if p is not None and q is not None]
        rows.append({"prompt": scene.caption, "recover_error": float(np.abs(made[:k] - truth[:k]).mean()),
                     "object_offset": float(np.mean(offsets)) if offsets else float("nan"),
                     "join": float(np.abs(made[k] - truth[k - 1]).mean()),
                     "inner": float(np.abs(np.diff(made[k:], axis=0)).mean())})
    return rows


def probe(model: StreamingT2V, config: ProbeConfig = ProbeConfig()) -> dict:
    clips, source, scenes = probe_clips(model, config)
    return {"teacher_forced": teacher_forced(model, clips, [s.caption for s in scenes], config, source),
            "one_chunk": one_chunk(model, clips, scenes, config)}


def report(name: str, result: dict, target: str = "reencoded") -> str:
    """Plain-text summary of one model's probe."""
    lines = [f"== {name}", f"teacher-forced x0 MSE ({target} target), re-covered / new frames:"]
    by_t: dict[int, list[str]] = {}
    direction: dict[int, str] = {}
    for r in result["teacher_forced"]:
        label = f"{r['condition']} w={r['w']:g}" if r["condition"] == "own" else r["condition"]
        by_t.setdefault(r["t"], []).append(f"{label}: {r['recovered']:.3f}/{r['new']:.3f}")
        if "direction_recovered" in r:
            direction[r["t"]] = f"{r['direction_recovered']:.4f}/{r['direction_new']:.4f}"
    lines += [f"  t={t:3d}  " + " | ".join(parts) for t, parts in by_t.items()]
    lines.append("guidance direction eps_text - eps_null, x0-space mean square, re-covered / new frames:")
    lines += [f"  t={t:3d}  {d}" for t, d in direction.items()]
    chunks = result["one_chunk"]
    lines.append("one sampled chunk (pixels of 255; offset in px):")
    lines += [f"  {r['prompt'][:40]:40s} recover {r['recover_error']:5.1f} offset {r['object_offset']:5.2f} "
              f"join {r['join']:5.1f} inner {r['inner']:4.1f}" for r in chunks]
    mean = lambda key: float(np.nanmean([r[key] for r in chunks]))  # noqa: E731
    lines.append(f"  mean: recover {mean('recover_error'):.1f} offset {mean('object_offset'):.2f} "
                 f"join {mean('join'):.2f} inner {mean('inner'):.2f} (join/inner {mean('join') / mean('inner'):.2f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m studies.conditioning_probe", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="extension model directories (StreamingT2V or Conc-Cond)")
    p.add_argument("--num-clips", type=int, default=ProbeConfig.num_clips)
    p.add_argument("--guidance", type=float, default=ProbeConfig.guidance)
    p.add_argument("--steps", type=int, default=ProbeConfig.steps)
    p.add_argument("--seed", type=int, default=ProbeConfig.seed)
    p.add_argument("--target", default=ProbeConfig.target,
                   help="teacher-forced target: reencoded (the frames' own latents) or source (the latents they "
                        "were decoded from, as at a chunk join in sampling)")
    args = p.parse_args(argv)
    try:
        config = ProbeConfig(num_clips=args.num_clips, guidance=args.guidance, steps=args.steps, seed=args.seed,
                             target=args.target)
    except ConfigError as err:
        print(f"conditioning_probe: error: {err}", file=sys.stderr)
        return 2
    for path in args.models:
        print(report(path, probe(StreamingT2V.from_pretrained(path), config), config.target), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
