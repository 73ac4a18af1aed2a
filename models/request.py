"""One video to generate: every parameter that changes its pixels, validated at the boundary."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from models.errors import ConfigError, require
from models.chunk_plan import ChunkPlan
from models.guidance import GuidanceWeights
from models.params import check, leaves, param
from models.presets import PRESETS
from models.prompt_schedule import PromptSchedule
from models.refinement import BlendMode
from models.seeding import MAX_SEED

MIN_FRAMES = 16  # one init chunk
MAX_FRAMES = 4800  # without --force: 8 minutes at 10 FPS (the paper shows up to 1200 frames)
MAX_FPS = 120


# The parameters whose default depends on the preset: a request that leaves one unset (None) takes
# its preset's value. The modelscope preset runs the paper's settings; the tiny preset's finish the
# README's first command within 2 minutes on 2 CPU cores and give the toy models' best videos
# (docs/toyworld.md).
PAPER_SETTINGS: dict[str, Any] = {"num_inference_steps": 50, "refine_steps": 50, "refine_guidance": 7.5,
                                  "condition_replacement": False}
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "modelscope": PAPER_SETTINGS,
    "tiny": {"num_inference_steps": 20, "refine_steps": 10, "refine_guidance": 1.0, "condition_replacement": True},
}


DEFAULT_PRESET = "tiny"


def _by_preset(name: str) -> str:
    return "the preset's: " + ", ".join(f"{p} {v[name]}" for p, v in PRESET_DEFAULTS.items() if name in v)


# The parameters of the first ids. Every parameter added since enters a request's id only when set
# away from its default, so every earlier request (and its manifest row and outputs) keeps its id,
# and a new parameter needs no entry here.
FIRST_ID_PARAMETERS = ("prompt", "num_frames", "seed", "negative_prompt", "guidance_text", "guidance_anchor",
                       "num_inference_steps", "refine", "blend", "refine_steps", "refine_guidance", "anchor_frame",
                       "apm", "fps", "preset")


@dataclass(frozen=True)
class GenerationRequest:
    """Every parameter that changes a video's pixels. Each field is declared once (models.params):
    the CLI's ``generate`` flags, the generate-batch and nightly-benchmark flow parameters, the
    Serve body and the manifest's columns are derived from these fields."""

    prompt: str = param(help="what the video shows", non_empty=True)
    prompt_schedule: str = param("", beyond_paper=True,
                                 help="prompts that take over from given frames, 'FRAME:PROMPT;FRAME:PROMPT' or a "
                                      "JSON list of [frame, prompt]; each chunk follows the prompt in force at its "
                                      "first new frame (models.prompt_schedule)")
    num_frames: int = param(80, help="frames of the final video", ge=MIN_FRAMES, le=MAX_FRAMES,
                            note="(pass --force for longer videos)")
    seed: int = param(0, help="seed of every noise draw", ge=0, le=MAX_SEED)
    init_video: str = param("", beyond_paper=True,
                            help="a clip (path or URI) that starts the video as given: its last 8 frames condition "
                                 "the first extension chunk (CAM), its first frame is the APM anchor; staged by "
                                 "content hash (infra.init_media)")
    init_image: str = param("", beyond_paper=True,
                            help="an image (path or URI) that starts the video: the first frame, the APM anchor, and "
                                 "the conditioning frames of the first extension chunk (repeated 8 times)")
    init_frames: int = param(0, beyond_paper=True, ge=0,
                             help="frames of init_video that start the video (0: all of it, at most num_frames; "
                                  "fixed when the clip is staged)")
    negative_prompt: str = param("", help="the text of the unconditional guidance branch")
    guidance_text: float = param(7.5, help="omega_text of Eq. 13 (paper: 7.5)", ge=0)
    guidance_anchor: float = param(7.5, help="omega_anchor of Eq. 13 (paper: 7.5)", ge=0)
    num_inference_steps: int | None = param(None, help="DDIM steps of init-chunk and autoregressive-extend "
                                            "(paper: 50)", ge=1, le=1000, flag="--steps",
                                            unset=_by_preset("num_inference_steps"))
    refine: bool = param(True, help="refine the low-resolution video (Sec. 4.3)")
    blend: BlendMode = param("randomized", help="how refinement chunks join: randomized blending (Eq. 8), or "
                             "the ablations shared-noise and independent (App. D.3)")
    refine_steps: int | None = param(None, help="DDIM step spacing of refine; from T' = 600 the paper's 50 take 30 "
                                     "steps", ge=1, le=1000, unset=_by_preset("refine_steps"))
    refine_guidance: float | None = param(None, help="text guidance weight of refine (paper: 7.5; 1 evaluates the "
                                          "text branch alone, half the compute)",
                                          ge=0, unset=_by_preset("refine_guidance"))
    anchor_frame: int = param(0, help="frame of the first chunk used as APM's anchor", ge=0, le=MIN_FRAMES - 1,
                              note="(a frame of the first chunk)")
    apm: bool = param(True, help="condition on the anchor frame through APM (Sec. 4.2); without it: the 'w/o APM' "
                      "ablation, text guidance only")
    condition_replacement: bool | None = param(
        None, beyond_paper=True,
        help="pin each extension chunk's re-covering frames to the previous chunk's latents noised to every "
             "step's t (the replacement method of Video Diffusion Models; models.streaming_t2v.ConditionReplacement)",
        unset=_by_preset("condition_replacement"))
    fps: int = param(10, help="frame rate of the written videos", ge=1, le=MAX_FPS)
    preset: str = param(DEFAULT_PRESET, help="model sizes and default weights", choices=tuple(PRESETS))
    force: bool = param(False, compare=False, help=f"allow more than {MAX_FRAMES} frames")

    def __post_init__(self) -> None:
        for name, value in with_preset_defaults({name: getattr(self, name) for name in (*PAPER_SETTINGS, "preset")
                                                 }).items():
            object.__setattr__(self, name, value)
        limit = "any integer >= 16 (with force)" if self.force else f"an integer in [{MIN_FRAMES}, {MAX_FRAMES}] " \
            "(pass --force for longer videos)"
        require(isinstance(self.num_frames, int) and not isinstance(self.num_frames, bool)
                and self.num_frames >= MIN_FRAMES and (self.force or self.num_frames <= MAX_FRAMES),
                "num_frames", self.num_frames, limit)
        schedule = PromptSchedule.of(self.prompt, self.prompt_schedule)
        require(schedule.last_change < self.num_frames, "prompt_schedule", schedule.changes,
                f"frames below num_frames={self.num_frames}")
        require(not (self.init_video and self.init_image), "init_image", self.init_image,
                "empty when init_video is given (a video starts from one of them)")
        if self.init_image:
            object.__setattr__(self, "init_frames", 1 if self.init_frames in (0, 1) else self.init_frames)
        require(self.init_frames == 0 or bool(self.init_video or self.init_image), "init_frames", self.init_frames,
                "0 without init_video or init_image")
        require(not self.init_image or self.init_frames == 1, "init_frames", self.init_frames, "1 with init_image")
        require(isinstance(self.init_frames, int) and self.init_frames <= self.num_frames, "init_frames",
                self.init_frames, f"at most num_frames={self.num_frames}")
        if self.init_frames:
            require(self.anchor_frame < self.init_frames, "anchor_frame", self.anchor_frame,
                    f"a frame of the given start (below init_frames={self.init_frames})")
        object.__setattr__(self, "prompt", schedule.prompt)
        object.__setattr__(self, "prompt_schedule", schedule.changes)  # canonical: one id per schedule
        check(self, skip=("num_frames",))  # before GuidanceWeights: errors name the request's fields
        GuidanceWeights(self.guidance_text, self.guidance_anchor)

    @property
    def given_frames(self) -> int:
        """Frames the video starts with as given (chunk 0 of its plan); 0: generated from text.
        An init_video must be staged (infra.init_media.stage_request) for its length to be known."""
        require(not self.init_video or self.init_frames > 0, "init_video", self.init_video,
                "staged before the video is planned (infra.init_media.stage_request)")
        return self.init_frames

    def extend_plan(self) -> ChunkPlan:
        """This video's extend chunks at its preset's geometry."""
        return PRESETS[self.preset].extend_plan(self.num_frames, self.given_frames)

    @property
    def schedule(self) -> PromptSchedule:
        return PromptSchedule.of(self.prompt, self.prompt_schedule)

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
        for name in [n for n in params if n not in FIRST_ID_PARAMETERS]:  # later additions, at their defaults
            if params[name] == PARAM_DEFAULTS[name]:
                del params[name]
        canonical = json.dumps(params, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def check_prompt_length(self, tokenizer, truncate: bool = False) -> None:
        """Refuse prompts longer than CLIP's 77-token context (start and end tokens included),
        unless the caller accepts CLIP's truncation."""
        from models.tokenizer import prompt_token_count

        limit = min(tokenizer.model_max_length, 77)
        texts = [("prompt", self.prompt), ("negative_prompt", self.negative_prompt)]
        texts += [(f"prompt_schedule[{frame}]", prompt) for frame, prompt in self.schedule.entries[1:]]
        for name, text in texts:
            count = prompt_token_count(tokenizer, text)
            if count > limit and not truncate:
                raise ConfigError(name, f"{count} tokens", f"at most {limit} CLIP tokens including start/end "
                                  "(shorten it, or pass --truncate-prompt to keep the first 77)")


def with_preset_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (request parameters, e.g. a flow's batch-wide ones) with each unset (None)
    parameter that depends on the preset set to the preset's value."""
    preset_values = PRESET_DEFAULTS.get(values.get("preset", DEFAULT_PRESET), PAPER_SETTINGS)
    return {**values, **{k: v for k, v in preset_values.items() if values.get(k) is None}}


PROMPT_FIELDS = ("prompt", "prompt_schedule")  # what a batch's rows give, one per video (not batch settings)
NOT_PARAMETERS = ("force",)  # lifts a limit; neither part of a video's identity nor of the manifest
PARAM_DEFAULTS: dict[str, object] = {
    **{leaf.name: leaf.default for leaf in leaves(GenerationRequest) if leaf.name not in NOT_PARAMETERS
       and not leaf.required}, **PAPER_SETTINGS}
"""The value of every request parameter that has a default, with the paper's settings for those the
preset sets (``force`` is not a parameter: it only lifts a limit): what a manifest row or a history
row written before a parameter existed had, and what a video id leaves out."""
