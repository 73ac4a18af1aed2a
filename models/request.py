"""One video to generate: every parameter that changes its pixels, validated at the boundary."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from models.errors import ConfigError, require
from models.guidance import GuidanceWeights
from models.params import check, leaves, param
from models.presets import PRESETS
from models.refinement import BlendMode
from models.seeding import MAX_SEED

MIN_FRAMES = 16  # one init chunk
MAX_FRAMES = 4800  # without --force: 8 minutes at 10 FPS (the paper shows up to 1200 frames)
MAX_FPS = 120


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
    num_frames: int = param(80, help="frames of the final video", ge=MIN_FRAMES, le=MAX_FRAMES,
                            note="(pass --force for longer videos)")
    seed: int = param(0, help="seed of every noise draw", ge=0, le=MAX_SEED)
    negative_prompt: str = param("", help="the text of the unconditional guidance branch")
    guidance_text: float = param(7.5, help="omega_text of Eq. 13 (paper: 7.5)", ge=0)
    guidance_anchor: float = param(7.5, help="omega_anchor of Eq. 13 (paper: 7.5)", ge=0)
    num_inference_steps: int = param(50, help="DDIM steps of init-chunk and autoregressive-extend (paper: 50)",
                                     ge=1, le=1000, flag="--steps")
    refine: bool = param(True, help="refine the low-resolution video (Sec. 4.3)")
    blend: BlendMode = param("randomized", help="how refinement chunks join: randomized blending (Eq. 8), or "
                             "the ablations shared-noise and independent (App. D.3)")
    refine_steps: int = param(50, help="DDIM step spacing of refine; from T' = 600 the paper's 50 take 30 steps",
                              ge=1, le=1000)
    refine_guidance: float = param(7.5, help="text guidance weight of refine", ge=0)
    anchor_frame: int = param(0, help="frame of the first chunk used as APM's anchor", ge=0, le=MIN_FRAMES - 1,
                              note="(a frame of the first chunk)")
    apm: bool = param(True, help="condition on the anchor frame through APM (Sec. 4.2); without it: the 'w/o APM' "
                      "ablation, text guidance only")
    condition_replacement: bool = param(
        False, beyond_paper=True,
        help="pin each extension chunk's re-covering frames to the previous chunk's latents noised to every "
             "step's t (the replacement method of Video Diffusion Models; models.streaming_t2v.ConditionReplacement)")
    fps: int = param(10, help="frame rate of the written videos", ge=1, le=MAX_FPS)
    preset: str = param("tiny", help="model sizes and default weights", choices=tuple(PRESETS))
    force: bool = param(False, compare=False, help=f"allow more than {MAX_FRAMES} frames")

    def __post_init__(self) -> None:
        limit = "any integer >= 16 (with force)" if self.force else f"an integer in [{MIN_FRAMES}, {MAX_FRAMES}] " \
            "(pass --force for longer videos)"
        require(isinstance(self.num_frames, int) and not isinstance(self.num_frames, bool)
                and self.num_frames >= MIN_FRAMES and (self.force or self.num_frames <= MAX_FRAMES),
                "num_frames", self.num_frames, limit)
        GuidanceWeights(self.guidance_text, self.guidance_anchor)
        check(self, skip=("num_frames",))

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
        for name in ("prompt", "negative_prompt"):
            count = prompt_token_count(tokenizer, getattr(self, name))
            if count > limit and not truncate:
                raise ConfigError(name, f"{count} tokens", f"at most {limit} CLIP tokens including start/end "
                                  "(shorten it, or pass --truncate-prompt to keep the first 77)")


NOT_PARAMETERS = ("force",)  # lifts a limit; neither part of a video's identity nor of the manifest
PARAM_DEFAULTS: dict[str, object] = {leaf.name: leaf.default for leaf in leaves(GenerationRequest)
                                     if leaf.name not in NOT_PARAMETERS and not leaf.required}
"""The default of every request parameter that has one (``force`` is not a parameter: it only lifts
a limit); the one table the Serve body and the batch manifest fill in from."""
