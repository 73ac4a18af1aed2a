"""CLIP tokenizer helpers: the tiny offline tokenizer, prompt-length checks, and growing a text
encoder's vocabulary when a tokenizer gains merges."""

from __future__ import annotations

from functools import lru_cache

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from models.errors import require


CLIP_CONTEXT = 77  # CLIP's text context, start and end tokens included


@lru_cache(maxsize=1)
def _byte_level_alphabet() -> tuple[str, ...]:
    """The 256 printable stand-ins for bytes used by byte-level BPE (GPT-2/CLIP convention)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return tuple(chars)


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer with no merges (one token per byte): it tokenizes any prompt,
    offline, with CLIP's normalisation, specials and 77-token context. Used by the ``tiny`` preset."""
    alphabet = _byte_level_alphabet()
    vocab = {c: i for i, c in enumerate(alphabet)}
    vocab.update({c + "</w>": len(alphabet) + i for i, c in enumerate(alphabet)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=CLIP_CONTEXT)


def prompt_token_count(tokenizer: CLIPTokenizer, prompt: str) -> int:
    """Tokens the prompt takes including start and end tokens (CLIP's context holds 77)."""
    return len(tokenizer(prompt, truncation=False).input_ids)


def word_symbols(word: str) -> list[str]:
    """The symbols byte-level BPE starts a word from, before any merge: one per character, the
    last marked as end of word ("left" -> l, e, f, t</w>)."""
    return [*word[:-1], word[-1] + "</w>"]


def extend_vocabulary(text_encoder: CLIPTextModel, old: CLIPTokenizer, new: CLIPTokenizer) -> None:
    """Grow ``text_encoder``'s token embeddings from ``old``'s vocabulary to ``new``'s, which must
    keep every id of ``old``. A new token starts as the mean embedding of the ``old`` tokens it
    is made of (a merged word starts as the mean of its bytes), so training picks up from what
    the encoder already knows."""
    old_vocab, new_vocab = old.get_vocab(), new.get_vocab()
    kept = {token: i for token, i in new_vocab.items() if token in old_vocab}
    require(kept == old_vocab, "tokenizer", len(new_vocab), "a vocabulary that keeps every token and id of the old one")
    embeddings = text_encoder.get_input_embeddings().weight.detach().clone()
    text_encoder.resize_token_embeddings(len(new_vocab), mean_resizing=False)  # every new row is set below
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[:len(old_vocab)] = embeddings
        for token, i in new_vocab.items():
            if token not in old_vocab:
                stem = token.removesuffix("</w>")
                symbols = list(stem) if stem == token else word_symbols(stem)
                require(all(s in old_vocab for s in symbols), "tokenizer", token,
                        "new tokens made of the old vocabulary's symbols (byte-level BPE merges)")
                weight[i] = embeddings[[old_vocab[s] for s in symbols]].mean(dim=0)
