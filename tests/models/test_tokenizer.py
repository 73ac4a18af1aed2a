"""Growing a text encoder's vocabulary: old tokens keep their embeddings (a prompt both tokenizers
split alike encodes identically), a new token starts as the mean of its symbols."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from models.errors import ConfigError
from models.presets import get_preset
from models.tokenizer import extend_vocabulary, tiny_clip_tokenizer
from toyworld.vocabulary import toy_world_tokenizer


def _encoder() -> CLIPTextModel:
    torch.manual_seed(0)
    return CLIPTextModel(CLIPTextConfig(**get_preset("tiny").text_encoder)).eval()


def test_old_tokens_keep_their_embeddings_and_new_ones_start_at_their_symbols_mean():
    old, new = tiny_clip_tokenizer(), toy_world_tokenizer()
    encoder = _encoder()
    prompt = "xyz qq"  # no toy-word merge applies: the same ids under both tokenizers
    ids = old(prompt, return_tensors="pt").input_ids
    assert torch.equal(ids, new(prompt, return_tensors="pt").input_ids)
    with torch.no_grad():
        before = encoder(ids)[0]
    table = encoder.get_input_embeddings().weight.detach().clone()
    extend_vocabulary(encoder, old, new)
    assert encoder.get_input_embeddings().weight.shape[0] == len(new) == encoder.config.vocab_size
    with torch.no_grad():
        assert torch.equal(encoder(ids)[0], before)
    left = new.get_vocab()["left</w>"]
    parts = [old.get_vocab()[s] for s in ("l", "e", "f", "t</w>")]
    assert torch.allclose(encoder.get_input_embeddings().weight[left], table[parts].mean(0))


def test_a_vocabulary_that_moves_old_ids_is_refused():
    old = tiny_clip_tokenizer()
    vocab = {token: (i + 1) % len(old) for token, i in old.get_vocab().items()}
    shuffled = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    with pytest.raises(ConfigError) as err:
        extend_vocabulary(_encoder(), old, shuffled)
    assert err.value.field == "tokenizer"
