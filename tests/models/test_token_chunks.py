"""Feed-forward layers split long token runs: same outputs, same weights, bounded calls."""

from __future__ import annotations

import torch
from diffusers.models.attention import FeedForward

import models.token_chunks as token_chunks
from models.token_chunks import TokenChunkedFeedForward, chunk_feed_forwards


def test_a_long_token_run_is_split_and_gives_the_same_output(monkeypatch):
    torch.manual_seed(0)
    plain = FeedForward(16, activation_fn="geglu")
    chunked = chunk_feed_forwards(torch.nn.Sequential(FeedForward(16, activation_fn="geglu")))[0]
    chunked.load_state_dict(plain.state_dict())
    x = torch.randn(3, 50, 16)
    monkeypatch.setattr(token_chunks, "FEED_FORWARD_TOKENS", 32)
    calls = []
    chunked.net[0].register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    out = chunked(x)
    assert calls == [32, 32, 32, 32, 22]  # 150 tokens in runs of at most 32
    torch.testing.assert_close(out, plain(x), rtol=0, atol=1e-6)
    assert out.shape == x.shape


def test_every_unet_feed_forward_is_chunked_with_its_state_dict_unchanged(tiny_video_ldm, tiny_streaming):
    for model in (tiny_video_ldm, tiny_streaming):
        layers = [m for m in model.unet.modules() if isinstance(m, FeedForward)]
        assert layers and all(type(m) is TokenChunkedFeedForward for m in layers)
        assert all(".ff.net." in key for key in model.unet.state_dict() if ".ff." in key)
