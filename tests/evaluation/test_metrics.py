"""The paper's metrics on synthetic videos with known answers (planted cuts, known displacement,
flicker, chunk seams) and on tiny CLIP / aesthetic models built here; no download."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from evaluation.metrics import (
    METRIC_NAMES, AestheticPredictor, FlowConfig, MetricUnavailable, ModelPaths, aesthetic_score, clip_score,
    evaluate_video, flow_magnitude_std, flow_statistics, mawe, mawe_reference, ofs, reid_from_embeddings,
    join_change_ratio, reid_score, save_png, scene_cut_frames, scene_cuts, warp_error,
    xt_slice)

SIZE = 64
SMALL = FlowConfig(size=(SIZE, SIZE))  # flow at the synthetic videos' own size: displacements stay in pixels


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth random RGB texture (blurred noise stretched to [0, 255]): good for optical flow."""
    t = cv2.GaussianBlur(rng.random((height, width, 3)).astype(np.float32), (0, 0), 3.0)
    return ((t - t.min()) / (t.max() - t.min()) * 255).round().astype(np.uint8)


def _pan(offsets: list[int], seed: int = 0) -> np.ndarray:
    """A camera panning over one texture: frame t is the window starting at column offsets[t]."""
    texture = _texture(np.random.default_rng(seed), SIZE, SIZE + max(offsets) + 1)
    return np.stack([texture[:, o:o + SIZE] for o in offsets])


def _mean_squared_frame_difference(frames: np.ndarray) -> float:
    return float(np.square(np.diff(frames.astype(np.float64), axis=0)).sum(-1).mean())


# --- SCuts ---------------------------------------------------------------------------------------

def test_planted_hard_cuts_are_counted():
    scenes = [_pan(list(range(20)), seed=s) for s in range(4)]  # 20 frames each > min_scene_len 15
    assert scene_cuts(np.concatenate(scenes)) == 3


def test_cut_frames_are_where_the_planted_scenes_start():
    scenes = [_pan(list(range(20)), seed=s) for s in range(4)]
    assert scene_cut_frames(np.concatenate(scenes)) == [20, 40, 60]
    assert scene_cut_frames(np.concatenate(scenes), 10) == [20, 40, 60]  # a request's integer fps


def test_join_change_ratio_sees_jumps_at_joins_only():
    """A pan that jumps 6 px at every join (and moves 1 px otherwise) has joins 6x a frame step."""
    offsets, position = [], 0
    for t in range(56):
        position += 6 if t in (16, 24, 32, 40, 48) else (1 if t else 0)
        offsets.append(position)
    jumpy = _pan(offsets)
    joins = (16, 24, 32, 40, 48)
    assert join_change_ratio(jumpy, joins) > 3
    assert abs(join_change_ratio(_pan(list(range(56))), joins) - 1) < 0.3


def test_prompt_change_ratio_tells_a_cut_from_a_smooth_handover():
    """At the frames a prompt schedule hands over: a scene cut there scores far above 1, a video
    that keeps moving as before about 1."""
    cut = np.concatenate([_pan(list(range(20)), seed=0), _pan(list(range(20)), seed=1)])
    smooth = _pan(list(range(40)))
    ratio = lambda video: evaluate_video(video, prompt_changes=[20], flow=SMALL)["metrics"]["prompt_change_ratio"]  # noqa: E731
    assert ratio(cut) > 5 and abs(ratio(smooth) - 1) < 0.3


def test_join_change_ratio_names_bad_joins():
    from models.errors import ConfigError

    with pytest.raises(ConfigError, match=r"joins=\[80\]: must be at least one frame index in \[1, 55\]"):
        join_change_ratio(_pan(list(range(56))), [80])


def test_smooth_pan_has_no_cut():
    assert scene_cuts(_pan(list(range(80)))) == 0


def test_scene_cuts_matches_pyscenedetect_on_the_encoded_file(tmp_path):
    """Feeding frames to the detector gives what PySceneDetect's own pipeline gives on the file."""
    from scenedetect import AdaptiveDetector, detect

    from infra.video_io import read_video, write_mp4

    video = np.concatenate([_pan(list(range(20)), seed=s) for s in range(3)])
    path = str(tmp_path / "cuts.mp4")
    write_mp4(video, path)
    assert scene_cuts(read_video(path)) == len(detect(path, AdaptiveDetector())) - 1 == 2


# --- flow metrics --------------------------------------------------------------------------------

def test_known_displacement_gives_ofs_d_squared_and_near_zero_warp_error():
    d = 2
    video = _pan([d * t for t in range(12)])
    statistics = flow_statistics(video, SMALL)
    assert ofs(statistics) == pytest.approx(d ** 2, rel=0.10)
    assert warp_error(statistics) < 0.01 * _mean_squared_frame_difference(video)


def test_static_video_has_no_motion():
    video = np.repeat(_pan([0])[:1], 8, axis=0)
    assert ofs(video, SMALL) < 1e-2
    assert warp_error(video, SMALL) < 1.0  # squared RGB distance on the [0, 255] scale


def test_flicker_has_higher_mawe_than_smooth_motion():
    smooth = _pan([2 * t for t in range(12)])
    brightness = np.random.default_rng(1).integers(-40, 41, size=(len(smooth), 1, 1, 1))
    flicker = np.clip(smooth.astype(np.int64) + brightness, 0, 255).astype(np.uint8)
    smooth_stats, flicker_stats = flow_statistics(smooth, SMALL), flow_statistics(flicker, SMALL)
    assert mawe(flicker_stats) > 10 * mawe(smooth_stats)
    assert mawe_reference(flicker_stats) > 10 * mawe_reference(smooth_stats)


def test_mawe_is_eq9_ratio_of_means():
    statistics = flow_statistics(_pan([t for t in range(8)]), SMALL)
    assert mawe(statistics) == pytest.approx(warp_error(statistics) / ofs(statistics))
    expected = np.mean(statistics.reference_warp_error / (9.5 * statistics.mean_magnitude))
    assert mawe_reference(statistics) == pytest.approx(expected)


def test_chunk_seams_raise_flow_magnitude_std():
    """1 px/frame pan whose position jumps 6 px at every 16-frame chunk boundary vs. no jumps."""
    seam_offsets = [t + 5 * (t // 16) for t in range(48)]
    seamed, smooth = _pan(seam_offsets), _pan(list(range(48)))
    assert flow_magnitude_std(seamed, SMALL) > 10 * flow_magnitude_std(smooth, SMALL)
    assert flow_magnitude_std(seamed, SMALL) > 0.5


def test_raft_without_weights_or_torchvision_is_unavailable(tmp_path):
    with pytest.raises(MetricUnavailable, match="weights not found at"):
        ofs(_pan([0, 1]), FlowConfig(size=(SIZE, SIZE), raft_weights=str(tmp_path / "raft.pth")))
    weights = tmp_path / "raft_large.pth"
    torch.save({}, weights)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(MetricUnavailable, match="needs torchvision"):
            ofs(_pan([0, 1]), FlowConfig(size=(SIZE, SIZE), raft_weights=str(weights)))


# --- CLIP score and aesthetic score on tiny models -----------------------------------------------

@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from models.tokenizer import tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer()
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=8)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    path = tmp_path_factory.mktemp("clip")
    model.save_pretrained(path)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return str(path)


@torch.no_grad()
def _manual_embeddings(model_dir: str, frames: np.ndarray, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and text embeddings through the towers and projections directly, not normalised."""
    from transformers import AutoProcessor, CLIPModel

    model, processor = CLIPModel.from_pretrained(model_dir).eval(), AutoProcessor.from_pretrained(model_dir)
    pixels = processor.image_processor(images=list(frames), return_tensors="pt")["pixel_values"]
    image = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
    ids = processor.tokenizer([prompt], return_tensors="pt")["input_ids"]
    text = model.text_projection(model.text_model(input_ids=ids).pooler_output)[0]
    return image, text


def test_clip_score_is_mean_cosine_times_100(tiny_clip_dir):
    frames, prompt = _pan([3 * t for t in range(5)]), "A camel resting on the snow field."
    image, text = _manual_embeddings(tiny_clip_dir, frames, prompt)
    cosines = [float(torch.dot(i, text) / (i.norm() * text.norm())) for i in image]
    assert clip_score(frames, prompt, tiny_clip_dir) == pytest.approx(100 * np.mean(cosines), abs=1e-4)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_aesthetic_score_is_the_laion_mlp_on_normalised_embeddings(tiny_clip_dir, tmp_path, suffix):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    state = AestheticPredictor(embedding_dim=16).state_dict()
    path = str(tmp_path / f"aesthetic{suffix}")
    if suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save(state, path)
    frames = _pan([3 * t for t in range(5)])
    image, _ = _manual_embeddings(tiny_clip_dir, frames, "")
    x = image / image.norm(dim=-1, keepdim=True)
    for i in (0, 2, 4, 6, 7):  # the Linear layers; Dropout is identity at eval and there are no activations
        x = x @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
    assert aesthetic_score(frames, tiny_clip_dir, path) == pytest.approx(float(x.mean()), abs=1e-5)


def test_missing_weights_are_reported_not_invented(tmp_path, tiny_clip_dir):
    frames = _pan([0, 1, 2])
    with pytest.raises(MetricUnavailable, match=f"weights not found at {tmp_path / 'nope'}"):
        clip_score(frames, "a prompt", str(tmp_path / "nope"))
    with pytest.raises(MetricUnavailable, match="weights not found at .*mlp.pth"):
        aesthetic_score(frames, tiny_clip_dir, str(tmp_path / "mlp.pth"))
    with pytest.raises(MetricUnavailable, match="weights not found at .*yunet.onnx"):
        reid_score(frames, str(tmp_path / "yunet.onnx"), str(tmp_path / "sface.onnx"))


def test_aesthetic_mlp_for_another_clip_width_is_refused(tiny_clip_dir, tmp_path):
    path = str(tmp_path / "l14.pth")
    torch.save(AestheticPredictor(embedding_dim=768).state_dict(), path)
    with pytest.raises(MetricUnavailable, match="takes 768-dim CLIP embeddings, the CLIP model gives 16"):
        aesthetic_score(_pan([0, 1]), tiny_clip_dir, path)


# --- re-id (Eq. 11-12) ---------------------------------------------------------------------------

def test_reid_takes_max_cosine_over_consecutive_frames_with_faces():
    a, b, c = np.eye(3)
    faces = [np.stack([a, b]),             # t=0: two faces
             np.stack([(a + c) / 2, c]),    # t=1: best match with t=0 is a.(a+c)/|a+c| = 1/sqrt(2)
             np.zeros((0, 3)),              # t=2: no face -> pairs (1,2) and (2,3) are skipped
             np.stack([c]),
             np.stack([2 * c])]             # t=4: same direction as t=3 -> cosine 1
    assert reid_from_embeddings(faces) == pytest.approx(100 * (1 / np.sqrt(2) + 1) / 2)


def test_reid_without_consecutive_faces_is_unavailable():
    with pytest.raises(MetricUnavailable, match="no two consecutive frames"):
        reid_from_embeddings([np.ones((1, 4)), np.zeros((0, 4)), np.ones((2, 4))])


# --- X-T slice and the whole report --------------------------------------------------------------

def test_xt_slice_stacks_one_row_over_time_and_round_trips_as_png(tmp_path):
    video = _pan([2 * t for t in range(10)])
    image = xt_slice(video)
    assert image.shape == (10, SIZE, 3)
    assert np.array_equal(image[3], video[3, SIZE // 2])
    assert np.array_equal(xt_slice(video, row=0)[5], video[5, 0])
    save_png(image, tmp_path / "slices" / "xt.png")
    back = cv2.cvtColor(cv2.imread(str(tmp_path / "slices" / "xt.png")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, image)
    with pytest.raises(ValueError, match=r"row=64: must be in \[0, 63\]"):
        xt_slice(video, row=SIZE)


def test_evaluate_video_reports_every_metric_or_why_not(tiny_clip_dir, tmp_path):
    video = _pan([2 * t for t in range(12)])
    report = evaluate_video(video, prompt="a pan", models=ModelPaths(clip=tiny_clip_dir), flow=SMALL)
    metrics, missing = report["metrics"], report["missing"]
    assert tuple(metrics) == METRIC_NAMES
    assert metrics["scuts"] == 0 and metrics["ofs"] == pytest.approx(4, rel=0.1)
    assert metrics["mawe"] == pytest.approx(metrics["warp_error"] / metrics["ofs"])
    assert metrics["clip_score"] == pytest.approx(clip_score(video, "a pan", tiny_clip_dir))
    assert set(missing) == {"aesthetic_score", "reid_score", "prompt_change_ratio"}
    assert metrics["prompt_change_ratio"] is None and "no prompt schedule" in missing["prompt_change_ratio"]
    assert metrics["aesthetic_score"] is None and missing["aesthetic_score"] == "no aesthetic MLP file given"
    assert metrics["reid_score"] is None and "face detector" in missing["reid_score"]
