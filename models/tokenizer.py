"""CLIP tokenizer helpers: the tiny offline tokenizer and prompt-length checks."""

from __future__ import annotations

from functools import lru_cache

from transformers import CLIPTokenizer


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
