"""A CLIP tokenizer whose BPE merges make every word of the toy world's captions one token.

The ``tiny`` preset's tokenizer is byte level with no merges (models/tokenizer.py): "left" is four
tokens, "right" five, so a small text encoder trained from scratch has to learn each word from
a sequence of bytes (docs/toyworld.md has what the toy base learnt). BPE merges learnt from the
toy captions, the way CLIP's were learnt from its corpus, give each caption word its own token
and embedding. Any other prompt still tokenizes, byte by byte
where no merge applies.
"""

from __future__ import annotations

from transformers import CLIPTokenizer

from models.tokenizer import CLIP_CONTEXT, tiny_clip_tokenizer, word_symbols
from toyworld.scenes import BACKGROUNDS, COLOURS, DIRECTIONS, SHAPES

GLUE_WORDS = ("a", "moving", "spinning", "and", "on", "background")
"""The caption template's own words (toyworld.scenes.Scene.caption)."""


def toy_words() -> tuple[str, ...]:
    """Every word a toy caption can contain."""
    return tuple(dict.fromkeys((*GLUE_WORDS, *SHAPES, *COLOURS, *DIRECTIONS, *BACKGROUNDS)))


def toy_world_tokenizer() -> CLIPTokenizer:
    """The byte-level tiny tokenizer plus, for each toy word, the chain of merges that joins its
    symbols left to right into one end-of-word token (each prefix is a token too).

    BPE applies the lowest-ranked merge first, so a word's chain can be cut by an earlier word's
    merge of two of its symbols (``tr`` of "triangle" inside "striped"). Words start in order of
    length, longest first, and any word that does not come out as one token moves to the front,
    until every one does."""
    order = sorted(toy_words(), key=len, reverse=True)
    for _ in range(len(order) + 1):
        tokenizer = _chained_merges(order)
        split = [w for w in order if len(tokenizer(w, add_special_tokens=False).input_ids) != 1]
        if not split:
            return tokenizer
        order = split + [w for w in order if w not in split]
    raise RuntimeError(f"no merge order makes these toy words single tokens: {split}")


def _chained_merges(words: list[str]) -> CLIPTokenizer:
    """The tiny tokenizer's vocabulary with its ids unchanged (bytes, end-of-word bytes, start and
    end tokens: a text encoder trained on it keeps its embeddings), then the merged tokens."""
    vocab = dict(tiny_clip_tokenizer().get_vocab())
    merges: list[tuple[str, str]] = []
    for word in words:
        symbols = word_symbols(word)
        joined = symbols[0]
        for nxt in symbols[1:]:
            if (joined, nxt) not in merges:
                merges.append((joined, nxt))
            joined += nxt
            vocab.setdefault(joined, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=CLIP_CONTEXT)
