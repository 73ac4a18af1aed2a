"""The CLIP whose image tower embeds APM's anchor: one preprocessing for training and sampling,
and a saved CLIP directory that serves its image tower as a released CLIP does."""

from __future__ import annotations

import torch

from models.clip_image import CLIPPair, clip_pixel_values, load_image_encoder
from models.streaming_t2v import StreamingT2V


def _frames(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_a_saved_clip_serves_its_image_tower_to_the_anchor_path(tmp_path):
    pair = CLIPPair.from_preset("tiny", seed=3)
    pair.save_pretrained(tmp_path / "clip")
    loaded = CLIPPair.from_pretrained(tmp_path / "clip")
    tower = load_image_encoder(tmp_path / "clip")
    frames = _frames()
    with torch.no_grad():
        expected = pair.image_embeds(frames)
        assert torch.equal(loaded.image_embeds(frames), expected)
        pixels = clip_pixel_values(frames, pair.image_size)
        assert torch.allclose(tower(pixel_values=pixels).image_embeds, expected, atol=1e-6)
    assert loaded.tokenizer.get_vocab() == pair.tokenizer.get_vocab()


def test_the_anchor_embedding_is_the_clip_image_feature_of_the_frame(tmp_path):
    """Sampling (StreamingT2V.anchor_embeds) and CLIP training (clip_pixel_values) preprocess a
    frame identically, so APM reads the embedding space the CLIP stage trained."""
    pair = CLIPPair.from_preset("tiny", seed=3)
    pair.save_pretrained(tmp_path / "clip")
    model = StreamingT2V.from_preset("tiny", seed=0)
    model.image_encoder = load_image_encoder(tmp_path / "clip")
    frames = _frames()
    with torch.no_grad():
        assert torch.allclose(model.anchor_embeds(frames), pair.image_embeds(frames), atol=1e-6)
    model.save_pretrained(tmp_path / "streaming")
    again = load_image_encoder(tmp_path / "streaming")  # a StreamingT2V directory's image_encoder/
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.image_encoder.state_dict().values()))


def test_the_contrastive_loss_is_lowest_for_matching_pairs():
    """CLIP's loss: ln(b) at chance; lower when each frame's caption is its own than when shuffled."""
    pair = CLIPPair.from_preset("tiny", seed=0)
    frames = _frames(4)
    captions = ["a red circle", "a blue square", "a green cross", "a white triangle"]
    opt = torch.optim.Adam(pair.model.parameters(), lr=3e-3)
    for _ in range(30):
        opt.zero_grad()
        pair.contrastive_loss(frames, captions).backward()
        opt.step()
    with torch.no_grad():
        matched = pair.contrastive_loss(frames, captions)
        shuffled = pair.contrastive_loss(frames, captions[1:] + captions[:1])
    assert matched < 0.5 * torch.log(torch.tensor(4.0)) < shuffled


def test_a_saved_clip_is_a_standard_clip_directory_for_the_clip_score(tmp_path):
    """AutoProcessor and CLIPModel load it as a released CLIP, so evaluation's CLIP score can
    use the toy CLIP on toy videos."""
    import numpy as np

    from evaluation.metrics import clip_score

    CLIPPair.from_preset("tiny", seed=3).save_pretrained(tmp_path / "clip")
    frames = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    score = clip_score(frames, "a red circle moving left on a striped background", str(tmp_path / "clip"))
    assert -100 <= score <= 100
