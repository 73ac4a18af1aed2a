"""The UNets' feed-forward layers run at most ``FEED_FORWARD_TOKENS`` tokens per call.

A transformer block's feed-forward acts on each token alone, so splitting the tokens changes only
the peak memory. It is the largest activation of a refine step at the paper's size: GEGLU widens
320 channels to 2 x 1280, which for 2 guidance branches x 24 frames x 90x160 latent tokens
(1280x720) is 3.5 GB per tensor in float16, and about 7 GB with the gate and its product. At
2^17 tokens per call it is 0.7 GB. Every smaller video (ModelScope's 256x256 chunks, the toy
models) stays under the limit and runs in one call, as before.
"""

from __future__ import annotations

import torch
from diffusers.models.attention import FeedForward

FEED_FORWARD_TOKENS = 2 ** 17


class TokenChunkedFeedForward(FeedForward):
    """diffusers' FeedForward (same parameters and state dict) that splits long token runs."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        forward, tokens = super().forward, hidden_states.reshape(-1, hidden_states.shape[-1])
        if tokens.shape[0] <= FEED_FORWARD_TOKENS:
            return forward(hidden_states, *args, **kwargs)
        out = torch.cat([forward(part, *args, **kwargs) for part in tokens.split(FEED_FORWARD_TOKENS)])
        return out.reshape(*hidden_states.shape[:-1], out.shape[-1])


def chunk_feed_forwards(module: torch.nn.Module) -> torch.nn.Module:
    """Make every diffusers FeedForward in ``module`` token-chunked, in place (its weights and
    state-dict keys unchanged); returns ``module``."""
    for layer in module.modules():
        if type(layer) is FeedForward:
            layer.__class__ = TokenChunkedFeedForward
    return module
