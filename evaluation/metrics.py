"""StreamingT2V's evaluation metrics (Sec. 5.2, App. D) as pure functions.

Every function takes a video as an ``(N, H, W, 3)`` uint8 RGB array (what
:func:`infra.video_io.read_video` returns). Per video the paper reports SCuts, MAWE (Eq. 9, from the
warp error W and the optical-flow score OFS), the CLIP score, the aesthetic score, re-id
(Eq. 11-12) and, for the refinement ablation, the std of the optical-flow magnitude (App. D.3);
each is then averaged over the test videos.

A metric that cannot be computed here (model files absent, undefined on this video) raises
:class:`MetricUnavailable` with the reason; :func:`evaluate_video` reports it as ``None`` with that
reason, never as a made-up number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from evaluation.flow import ESTIMATORS, FlowEstimator, FlowUnavailable
from evaluation.flow import estimator as flow_estimator
from models.errors import require

METRIC_NAMES = ("scuts", "ofs", "warp_error", "mawe", "mawe_reference", "flow_magnitude_std",
                "clip_score", "aesthetic_score", "reid_score", "prompt_change_ratio")

SFACE_DIM = 128  # length of an OpenCV SFace face embedding


class MetricUnavailable(RuntimeError):
    """A metric cannot be computed here; the message is the reason (e.g. ``weights not found at ...``)."""


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Return ``frames`` if it is an (N, H, W, 3) uint8 array with N >= 1, else raise ValueError."""
    ok = isinstance(frames, np.ndarray) and frames.ndim == 4 and frames.shape[-1] == 3 \
        and frames.dtype == np.uint8 and len(frames) > 0
    if not ok:
        got = f"{frames.shape} {frames.dtype}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"frames={got}: must be an (N, H, W, 3) uint8 RGB array with N >= 1")
    return frames


# --- SCuts ---------------------------------------------------------------------------------------

def scene_cuts(frames: np.ndarray, fps: float = 10.0) -> int:
    """SCuts (Sec. 5.2): the number of scene cuts PySceneDetect's ``AdaptiveDetector`` finds with its
    default parameters (lower is better for a single-scene prompt); see :func:`scene_cut_frames`."""
    return len(scene_cut_frames(frames, fps))


def scene_cut_frames(frames: np.ndarray, fps: float = 10.0) -> list[int]:
    """The frames at which SCuts' detector starts a new scene, sorted: where a video cuts.

    Frames reach the detector as ``SceneManager.detect_scenes`` would pass them: BGR, downscaled by
    SceneManager's default automatic factor (to an effective size of at least 256 px) with linear
    interpolation. ``fps`` only labels timecodes: the default ``min_scene_len`` is 15 frames.
    """
    from scenedetect import AdaptiveDetector, FrameTimecode
    from scenedetect.scene_manager import compute_downscale_factor

    frames = check_frames(frames)
    height, width = frames.shape[1:3]
    factor = compute_downscale_factor(max(width, height))
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    detector = AdaptiveDetector()
    fps = float(fps)  # PySceneDetect refuses an integer rate
    cuts = []
    for index, frame in enumerate(frames):
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        if factor > 1:
            bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR)
        cuts += detector.process_frame(FrameTimecode(index, fps), bgr)
    cuts += detector.post_process(FrameTimecode(len(frames) - 1, fps))
    return sorted({cut.frame_num for cut in cuts})


def join_change_ratio(frames: np.ndarray, joins: Sequence[int]) -> float:
    """How visible a long video's chunk joins are, below SCuts' threshold (beyond the paper): the
    mean absolute pixel change from frame j - 1 to frame j over the joins j (e.g.
    ``ChunkPlan.for_extend(n).joins``), over the median change between consecutive frames. About 1:
    a join changes the picture as much as a typical frame step; a hard cut makes it large.
    """
    frames = check_frames(frames)
    require(len(joins) > 0 and all(isinstance(j, int) and 1 <= j < len(frames) for j in joins), "joins",
            list(joins), f"at least one frame index in [1, {len(frames) - 1}] (the video has {len(frames)} frames)")
    steps = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))
    typical = float(np.median(steps))
    require(typical > 0, "frames", "a still video", "a video whose frames change (the median frame change is 0)")
    return float(np.mean([steps[j - 1] for j in joins]) / typical)


# --- optical flow --------------------------------------------------------------------------------

@dataclass(frozen=True)
class FlowConfig:
    """How optical flow is computed for OFS, W, MAWE and the flow-magnitude std.

    size: (width, height) every frame is resized to (bilinear) before flow; the paper computes its
        flow metrics at 720x720. Magnitudes are in pixels of this size.
    method: ``dis-lk`` (:class:`evaluation.flow.DISLucasKanade`, validated on videos with known
        motion) or ``farneback`` (for comparison with rows measured by it); ``raft`` whenever
        ``raft_weights`` is given.
    raft_weights: a local torchvision RAFT-large state dict (the paper's reference script's flow).
    """

    size: tuple[int, int] = (720, 720)
    raft_weights: str | None = None
    method: str = "dis-lk"

    def __post_init__(self) -> None:
        require(self.method in ESTIMATORS, "flow_estimator", self.method, f"one of {list(ESTIMATORS)}")

    @property
    def name(self) -> str:
        """The estimator that produces the flow (recorded beside the metrics it gives)."""
        return "raft" if self.raft_weights is not None else self.method

    def estimator(self) -> FlowEstimator:
        try:
            return flow_estimator(self.name, self.raft_weights)
        except FlowUnavailable as exc:
            raise MetricUnavailable(str(exc)) from exc


@dataclass(frozen=True)
class FlowStatistics:
    """Statistics of each consecutive frame pair (t, t+1) at :attr:`FlowConfig.size`; arrays of N - 1.

    f_t is the flow t -> t+1, b_t the flow t+1 -> t, pixel values are RGB in [0, 255].
    """

    mean_squared_magnitude: np.ndarray  # mean_x |f_t(x)|^2
    mean_magnitude: np.ndarray  # mean_x |f_t(x)|
    warp_error: np.ndarray  # see _warp_error; NaN where every pixel is occluded
    reference_warp_error: np.ndarray  # see _reference_warp_error


def flow_statistics(frames: np.ndarray, config: FlowConfig = FlowConfig()) -> FlowStatistics:
    """Flow both ways for every consecutive pair, reduced to per-pair numbers as it goes (a 240-frame
    video's full-resolution flows would not fit in memory). Pass the result to the flow metrics to
    compute flow once for all of them."""
    frames = check_frames(frames)
    if len(frames) < 2:
        raise MetricUnavailable("flow metrics need at least 2 frames")
    estimate = config.estimator()
    resized = (cv2.resize(frame, config.size, interpolation=cv2.INTER_LINEAR) for frame in frames)
    previous = next(resized)
    rows = []
    for current in resized:
        rows.append(_pair_statistics(previous, current, estimate))
        previous = current
    return FlowStatistics(*(np.asarray(column, dtype=np.float64) for column in zip(*rows)))


def _pair_statistics(previous: np.ndarray, current: np.ndarray,
                     estimate: FlowEstimator) -> tuple[float, float, float, float]:
    forward = estimate(previous, current)
    backward = estimate(current, previous)
    squared = np.square(forward).sum(-1)
    return (float(squared.mean()), float(np.sqrt(squared).mean()),
            _warp_error(previous, current, forward, backward), _reference_warp_error(previous, current, forward))


def _pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    return np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))


def _warp_error(previous: np.ndarray, current: np.ndarray, forward: np.ndarray, backward: np.ndarray) -> float:
    """Mean over the visible pixels x of frame t+1 of ||I_{t+1}(x) - I_t(x + b_t(x))||^2 (squared L2
    over RGB, bilinear backward warp). x is occluded when x + b_t(x) leaves the frame or fails the
    forward-backward check |b + f'|^2 < 0.01 (|b|^2 + |f'|^2) + 0.5, f' = f_t(x + b_t(x))
    (Sundaram et al. 2010, as in the video warp-error literature)."""
    height, width = backward.shape[:2]
    grid_x, grid_y = _pixel_grid(height, width)
    map_x, map_y = grid_x + backward[..., 0], grid_y + backward[..., 1]
    warped = cv2.remap(previous.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR)
    forward_there = cv2.remap(forward, map_x, map_y, cv2.INTER_LINEAR)
    round_trip = np.square(backward + forward_there).sum(-1)
    tolerance = 0.01 * (np.square(backward).sum(-1) + np.square(forward_there).sum(-1)) + 0.5
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    visible = inside & (round_trip < tolerance)
    if not visible.any():
        return math.nan
    return float(np.square(current.astype(np.float32) - warped).sum(-1)[visible].mean())


def _reference_warp_error(previous: np.ndarray, current: np.ndarray, forward: np.ndarray) -> float:
    """The reference MAWE script's warp error: frame t splatted along f_t to the nearest pixel,
    compared with frame t+1 on the pixels it reached, mean over those pixels and the 3 channels
    (0 when none is reached, as there)."""
    height, width = forward.shape[:2]
    grid_x, grid_y = _pixel_grid(height, width)
    to_x = np.rint(grid_x + forward[..., 0]).astype(np.int64)
    to_y = np.rint(grid_y + forward[..., 1]).astype(np.int64)
    inside = (to_x >= 0) & (to_x < width) & (to_y >= 0) & (to_y < height)
    warped = np.zeros(previous.shape, dtype=np.float32)
    reached = np.zeros((height, width), dtype=bool)
    warped[to_y[inside], to_x[inside]] = previous[inside]
    reached[to_y[inside], to_x[inside]] = True
    if not reached.any():
        return 0.0
    return float(np.square(current.astype(np.float32) - warped)[reached].mean())


def _statistics(video: np.ndarray | FlowStatistics, config: FlowConfig) -> FlowStatistics:
    return video if isinstance(video, FlowStatistics) else flow_statistics(video, config)


def ofs(video: np.ndarray | FlowStatistics, config: FlowConfig = FlowConfig()) -> float:
    """OFS (Sec. 5.2, the denominator of Eq. 9): mean over consecutive frame pairs and pixels of the
    squared optical-flow magnitude |f_t(x)|^2, in pixels^2 at ``config.size``. Higher = more motion."""
    return float(_statistics(video, config).mean_squared_magnitude.mean())


def warp_error(video: np.ndarray | FlowStatistics, config: FlowConfig = FlowConfig()) -> float:
    """W (Sec. 5.2, the numerator of Eq. 9): per pair, the mean squared L2 RGB distance ([0, 255]
    scale) between frame t+1 and frame t warped by the flow, occluded pixels excluded by a
    forward-backward consistency check; averaged over the pairs."""
    per_pair = _statistics(video, config).warp_error
    if np.isnan(per_pair).all():
        raise MetricUnavailable("every pixel of every frame pair is occluded")
    return float(np.nanmean(per_pair))


def mawe(video: np.ndarray | FlowStatistics, config: FlowConfig = FlowConfig()) -> float:
    """MAWE(V) = W(V) / OFS(V) (Eq. 9), the ratio of the two video means; lower is better: few
    inconsistencies for the amount of motion, so a static video cannot score well."""
    statistics = _statistics(video, config)
    motion = ofs(statistics)
    if motion == 0:
        raise MetricUnavailable("MAWE is undefined for a video without motion (OFS = 0)")
    return warp_error(statistics) / motion


def mawe_reference(video: np.ndarray | FlowStatistics, config: FlowConfig = FlowConfig(),
                   coeff: float = 9.5) -> float:
    """MAWE as the paper's public reference script computes it (not Eq. 9 literally): the mean over
    frame pairs of warp_err_t / (coeff * mean_x |f_t(x)|), warp_err_t from a nearest-pixel forward
    splat (see ``_reference_warp_error``), coeff = 9.5. Its numbers are comparable with the
    paper's tables only with RAFT flow (``FlowConfig.raft_weights``)."""
    statistics = _statistics(video, config)
    if (statistics.mean_magnitude == 0).any():
        raise MetricUnavailable("reference MAWE is undefined when a frame pair has no motion (mean flow 0)")
    return float(np.mean(statistics.reference_warp_error / (coeff * statistics.mean_magnitude)))


def flow_magnitude_std(video: np.ndarray | FlowStatistics, config: FlowConfig = FlowConfig()) -> float:
    """Smoothness of App. D.3 (refinement ablation; lower = smoother): the population standard
    deviation, over the N - 1 consecutive frame pairs, of the per-pair mean flow magnitude
    mean_x |f_t(x)| (pixels at ``config.size``). A seam between chunks is a spike in that series."""
    return float(_statistics(video, config).mean_magnitude.std())


# --- CLIP score and aesthetic score --------------------------------------------------------------

@lru_cache(maxsize=2)
def _load_clip(model_dir: str) -> tuple[nn.Module, object]:
    """A transformers CLIPModel and its processor from a local directory, loaded once per directory."""
    from transformers import AutoProcessor, CLIPModel

    if not (Path(model_dir) / "config.json").is_file():
        raise MetricUnavailable(f"weights not found at {model_dir}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return CLIPModel.from_pretrained(model_dir).to(device).eval(), AutoProcessor.from_pretrained(model_dir)


@torch.no_grad()
def clip_image_embeddings(frames: np.ndarray, model_dir: str, batch_size: int = 32) -> torch.Tensor:
    """(N, D) L2-normalised CLIP image embeddings (projection space) of every frame."""
    frames = check_frames(frames)
    model, processor = _load_clip(str(model_dir))
    batches = []
    for start in range(0, len(frames), batch_size):
        pixels = processor.image_processor(images=list(frames[start:start + batch_size]),
                                           return_tensors="pt")["pixel_values"]
        batches.append(model.get_image_features(pixel_values=pixels.to(model.device, model.dtype)).pooler_output)
    return nn.functional.normalize(torch.cat(batches).float().cpu(), dim=-1)


@torch.no_grad()
def clip_text_embedding(prompt: str, model_dir: str) -> torch.Tensor:
    """(D,) L2-normalised CLIP text embedding of ``prompt`` (CLIP's truncation to 77 tokens)."""
    model, processor = _load_clip(str(model_dir))
    tokens = processor.tokenizer([prompt], padding=True, truncation=True, return_tensors="pt").to(model.device)
    features = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    return nn.functional.normalize(features.pooler_output.float().cpu(), dim=-1)[0]


def clip_score(frames: np.ndarray, prompt: str, model_dir: str) -> float:
    """CLIP score (Sec. 5.2): cosine similarity of the CLIP text embedding of ``prompt`` and each
    frame's CLIP image embedding, averaged over frames, reported x100 (the scale of the paper's
    tables; in [-100, 100]). ``model_dir``: a local transformers CLIP directory."""
    return 100 * float((clip_image_embeddings(frames, model_dir) @ clip_text_embedding(prompt, model_dir)).mean())


class AestheticPredictor(nn.Module):
    """LAION's "improved aesthetic predictor": an MLP with no activations (as released) on the
    L2-normalised CLIP image embedding; layer indices match the released state dict (``layers.0``
    ... ``layers.7``). ``embedding_dim`` is the CLIP projection dim (768 for ViT-L/14, LAION's)."""

    def __init__(self, embedding_dim: int = 768) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(embedding_dim, 1024), nn.Dropout(0.2),
            nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings).squeeze(-1)


@lru_cache(maxsize=2)
def load_aesthetic_predictor(path: str, embedding_dim: int) -> AestheticPredictor:
    """The MLP from a local ``.pth`` (plain state dict) or ``.safetensors`` file, loaded once."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise MetricUnavailable(f"weights not found at {path}")
    state = load_file(path) if path.endswith(".safetensors") else \
        torch.load(path, map_location="cpu", weights_only=True)
    expected = state["layers.0.weight"].shape[1]
    if expected != embedding_dim:
        raise MetricUnavailable(f"the aesthetic MLP at {path} takes {expected}-dim CLIP embeddings, "
                                f"the CLIP model gives {embedding_dim}")
    predictor = AestheticPredictor(embedding_dim)
    predictor.load_state_dict(state)
    return predictor.eval()


@torch.no_grad()
def aesthetic_score(frames: np.ndarray, clip_model_dir: str, aesthetic_mlp_path: str) -> float:
    """Aesthetic score (Sec. 5.2): the LAION aesthetic predictor on the CLIP image embedding of every
    frame, averaged over frames (LAION's scale, roughly 1-10). The MLP's input dim must equal the
    CLIP model's projection dim."""
    if not Path(aesthetic_mlp_path).is_file():
        raise MetricUnavailable(f"weights not found at {aesthetic_mlp_path}")
    embeddings = clip_image_embeddings(frames, clip_model_dir)
    predictor = load_aesthetic_predictor(str(aesthetic_mlp_path), embeddings.shape[1])
    return float(predictor(embeddings).mean())


# --- re-id ---------------------------------------------------------------------------------------

def reid_from_embeddings(faces: Sequence[np.ndarray]) -> float:
    """re-id (Eq. 11-12) from face embeddings: ``faces[t]`` is a (k_t, D) array, one row per face
    detected in frame t (k_t may be 0). For every t whose frames t and t+1 both have faces,
    s_t = max_{i,j} cos(e_t^i, e_{t+1}^j) (Eq. 11); the score is the mean of s_t over those t
    (Eq. 12), reported x100 as in the paper (93.42 -> 94.95 with APM)."""
    def unit(e: np.ndarray) -> np.ndarray:
        e = np.asarray(e, dtype=np.float64)
        return e / np.linalg.norm(e, axis=-1, keepdims=True)

    scores = [float((unit(a) @ unit(b).T).max()) for a, b in zip(faces, faces[1:]) if len(a) and len(b)]
    if not scores:
        raise MetricUnavailable("no two consecutive frames with face detections")
    return 100 * float(np.mean(scores))


def face_embeddings(frames: np.ndarray, detector_model: str, recognizer_model: str,
                    score_threshold: float = 0.9) -> list[np.ndarray]:
    """Per frame, the (k_t, 128) SFace embeddings of the faces OpenCV's YuNet finds
    (``cv2.FaceDetectorYN`` / ``cv2.FaceRecognizerSF`` with local .onnx files)."""
    for path in (detector_model, recognizer_model):
        if not Path(path).is_file():
            raise MetricUnavailable(f"weights not found at {path}")
    frames = check_frames(frames)
    height, width = frames.shape[1:3]
    detector = cv2.FaceDetectorYN.create(str(detector_model), "", (width, height), score_threshold)
    recognizer = cv2.FaceRecognizerSF.create(str(recognizer_model), "")
    embeddings = []
    for frame in frames:
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        _, faces = detector.detect(bgr)
        faces = [] if faces is None else faces
        rows = [recognizer.feature(recognizer.alignCrop(bgr, face)).ravel() for face in faces]
        embeddings.append(np.stack(rows) if rows else np.zeros((0, SFACE_DIM), dtype=np.float32))
    return embeddings


def reid_score(frames: np.ndarray, detector_model: str, recognizer_model: str) -> float:
    """re-id (Eq. 11-12) with OpenCV YuNet detection and SFace embeddings; see :func:`reid_from_embeddings`."""
    return reid_from_embeddings(face_embeddings(frames, detector_model, recognizer_model))


# --- X-T slices (Fig. 4, Fig. 12) ----------------------------------------------------------------

def xt_slice(frames: np.ndarray, row: int | None = None) -> np.ndarray:
    """The X-T slice of Fig. 4 / Fig. 12: pixel row ``row`` (default: the middle row) of every frame
    stacked over time, an (N, W, 3) image with time running down. Motion draws slanted streaks,
    stagnation vertical ones, a hard cut a horizontal break."""
    frames = check_frames(frames)
    height = frames.shape[1]
    row = height // 2 if row is None else row
    if not 0 <= row < height:
        raise ValueError(f"row={row}: must be in [0, {height - 1}]")
    return frames[:, row].copy()


def save_png(image: np.ndarray, path: str | Path) -> None:
    """Write an (H, W, 3) uint8 RGB image as PNG (OpenCV, already needed for flow)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write PNG to {path}")


# --- everything for one video --------------------------------------------------------------------

@dataclass(frozen=True)
class ModelPaths:
    """Local model files of the learned metrics; a metric whose files are not given is reported missing.

    clip: transformers CLIP directory for the CLIP score.
    aesthetic_clip: CLIP directory whose embeddings feed the aesthetic MLP (LAION's: ViT-L/14);
        None: ``clip``.
    aesthetic_mlp: LAION aesthetic predictor state dict (.pth / .safetensors).
    face_detector, face_recognizer: OpenCV YuNet and SFace .onnx files for re-id.
    """

    clip: str | None = None
    aesthetic_clip: str | None = None
    aesthetic_mlp: str | None = None
    face_detector: str | None = None
    face_recognizer: str | None = None


def _changes(frames: Sequence[int], length: int) -> list[int]:
    inside = [int(f) for f in frames if 1 <= f < length]
    if not inside:
        raise MetricUnavailable("no prompt schedule (no prompt change inside the video)")
    return inside


def _given(value: str | None, what: str) -> str:
    if value is None:
        raise MetricUnavailable(f"no {what} given")
    return value


def evaluate_video(video: str | Path | np.ndarray, prompt: str | None = None,
                   models: ModelPaths = ModelPaths(), flow: FlowConfig = FlowConfig(),
                   prompt_changes: Sequence[int] = ()) -> dict:
    """All metrics of one video (a file/URI or an (N, H, W, 3) uint8 array), flow computed once.
    ``prompt_changes``: the frames where a prompt schedule hands over (beyond the paper:
    ``prompt_change_ratio`` is :func:`join_change_ratio` at those frames: about 1 for a smooth
    transition, large for a cut).

    Returns ``{"metrics": {name: value or None for name in METRIC_NAMES}, "missing": {name: reason},
    "flow_estimator": the flow method behind OFS, W, MAWE and the flow-magnitude std}``.
    """
    if isinstance(video, np.ndarray):
        frames = check_frames(video)
    else:
        from infra.video_io import read_video

        frames = read_video(str(video))
    statistics = lru_cache(maxsize=1)(lambda: flow_statistics(frames, flow))
    aesthetic_clip = models.aesthetic_clip or models.clip
    compute: dict[str, Callable[[], float]] = {
        "scuts": lambda: scene_cuts(frames),
        "ofs": lambda: ofs(statistics()),
        "warp_error": lambda: warp_error(statistics()),
        "mawe": lambda: mawe(statistics()),
        "mawe_reference": lambda: mawe_reference(statistics()),
        "flow_magnitude_std": lambda: flow_magnitude_std(statistics()),
        "clip_score": lambda: clip_score(frames, _given(prompt, "prompt"), _given(models.clip, "CLIP model directory")),
        "aesthetic_score": lambda: aesthetic_score(frames, _given(aesthetic_clip, "CLIP model directory"),
                                                   _given(models.aesthetic_mlp, "aesthetic MLP file")),
        "reid_score": lambda: reid_score(frames, _given(models.face_detector, "face detector (YuNet .onnx)"),
                                         _given(models.face_recognizer, "face recognizer (SFace .onnx)")),
        "prompt_change_ratio": lambda: join_change_ratio(frames, _changes(prompt_changes, len(frames))),
    }
    metrics: dict[str, float | None] = {}
    missing: dict[str, str] = {}
    for name in METRIC_NAMES:
        try:
            metrics[name] = compute[name]()
        except MetricUnavailable as reason:
            metrics[name], missing[name] = None, str(reason)
    return {"metrics": metrics, "missing": missing, "flow_estimator": flow.name}
