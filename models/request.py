"""One video to generate: every parameter that changes its pixels, validated at the boundary."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields

from models.errors import ConfigError, require
from models.guidance import GuidanceWeights
from models.refinement import BLEND_MODES, BlendMode
from models.seeding import MAX_SEED

MIN_FRAMES = 16  # one init chunk
MAX_FRAMES = 4800  # without --force: 8 minutes at 10 FPS (the paper shows up to 1200 frames)
MAX_FPS = 120


# Parameters added after ids were first handed out: they enter a request's id only when set away
# from these defaults, so every earlier request (and its manifest row and outputs) keeps its id.
ID_OPTIONAL: dict[str, object] = {"condition_replacement": False}


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    num_frames: int = 80
    seed: int = 0
    negative_prompt: str = ""
    guidance_text: float = 7.5  # omega_text (Eq. 13)
    guidance_anchor: float = 7.5  # omega_anchor (Eq. 13)
    num_inference_steps: int = 50  # DDIM steps of init-chunk and autoregressive-extend
    refine: bool = True
    blend: BlendMode = "randomized"
    refine_steps: int = 50  # DDIM spacing of the refiner; from T' = 600 this takes 30 steps
    refine_guidance: float = 7.5
    anchor_frame: int = 0  # frame of the first chunk used as APM anchor
    apm: bool = True  # False: the "w/o APM" ablation (no anchor conditioning, text guidance only)
    # Beyond the paper: pin each extension chunk's re-covering frames to the previous chunk's
    # latents noised to every step's t (models.streaming_t2v.ConditionReplacement).
    condition_replacement: bool = False
    fps: int = 10
    preset: str = "tiny"
    force: bool = field(default=False, compare=False)  # allow num_frames beyond MAX_FRAMES

    def __post_init__(self) -> None:
        require(isinstance(self.prompt, str) and self.prompt.strip() != "", "prompt", self.prompt,
                "a non-empty string")
        limit = "any integer >= 16 (with force)" if self.force else f"an integer in [{MIN_FRAMES}, {MAX_FRAMES}] " \
            "(pass --force for longer videos)"
        require(isinstance(self.num_frames, int) and self.num_frames >= MIN_FRAMES and
                (self.force or self.num_frames <= MAX_FRAMES), "num_frames", self.num_frames, limit)
        require(isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED, "seed", self.seed,
                f"an integer in [0, {MAX_SEED}]")
        GuidanceWeights(self.guidance_text, self.guidance_anchor)
        require(isinstance(self.refine_guidance, (int, float)) and math.isfinite(self.refine_guidance)
                and self.refine_guidance >= 0, "refine_guidance", self.refine_guidance, "a finite number >= 0")
        for name in ("num_inference_steps", "refine_steps"):
            value = getattr(self, name)
            require(isinstance(value, int) and 1 <= value <= 1000, name, value, "an integer in [1, 1000]")
        require(self.blend in BLEND_MODES, "blend", self.blend, f"one of {list(BLEND_MODES)}")
        require(isinstance(self.fps, int) and 1 <= self.fps <= MAX_FPS, "fps", self.fps,
                f"an integer in [1, {MAX_FPS}]")
        require(isinstance(self.condition_replacement, bool), "condition_replacement", self.condition_replacement,
                "True or False")
        require(isinstance(self.anchor_frame, int) and 0 <= self.anchor_frame < MIN_FRAMES, "anchor_frame",
                self.anchor_frame, f"an integer in [0, {MIN_FRAMES - 1}] (a frame of the first chunk)")

    @property
    def guidance(self) -> GuidanceWeights:
        return GuidanceWeights(self.guidance_text, self.guidance_anchor)

    def params(self) -> dict:
        out = asdict(self)
        out.pop("force")
        return out

    @property
    def video_id(self) -> str:
        """Stable id of the request: the same command maps to the same id, which is what lets a
        re-run find and resume its earlier work."""
        params = self.params()
        for name, default in ID_OPTIONAL.items():  # later additions: old requests keep their ids
            if params[name] == default:
                del params[name]
        canonical = json.dumps(params, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def check_prompt_length(self, tokenizer, truncate: bool = False) -> None:
        """Refuse prompts longer than CLIP's 77-token context (start and end tokens included),
        unless the caller accepts CLIP's truncation."""
        from models.tokenizer import prompt_token_count

        limit = min(tokenizer.model_max_length, 77)
        for name in ("prompt", "negative_prompt"):
            count = prompt_token_count(tokenizer, getattr(self, name))
            if count > limit and not truncate:
                raise ConfigError(name, f"{count} tokens", f"at most {limit} CLIP tokens including start/end "
                                  "(shorten it, or pass --truncate-prompt to keep the first 77)")


PARAM_DEFAULTS: dict[str, object] = {f.name: f.default for f in fields(GenerationRequest)
                                     if f.name != "force" and f.default is not MISSING}
"""The default of every request parameter that has one (``force`` is not a parameter: it only lifts
a limit); the one table the Serve body and the batch manifest fill in from."""
