"""The toy world's tokenizer: every caption word is one token, the tiny tokenizer's ids are kept,
any prompt still tokenizes, and it survives save/load."""

from __future__ import annotations

from transformers import CLIPTokenizer

from models.tokenizer import tiny_clip_tokenizer
from toyworld.dataset import HELD_OUT_PROMPTS, toy_clip
from toyworld.vocabulary import toy_words, toy_world_tokenizer


def test_every_toy_caption_is_one_token_per_word():
    tokenizer = toy_world_tokenizer()
    assert all(len(tokenizer(w, add_special_tokens=False).input_ids) == 1 for w in toy_words())
    captions = list(HELD_OUT_PROMPTS) + [toy_clip(0, i, 2, 10.0, 32)[1] for i in range(20)]
    for caption in captions:
        tokens = tokenizer.convert_ids_to_tokens(tokenizer(caption, add_special_tokens=False).input_ids)
        assert [t.removesuffix("</w>") for t in tokens] == caption.split()


def test_the_tiny_ids_are_kept_and_other_prompts_still_tokenize(tmp_path):
    tokenizer, tiny = toy_world_tokenizer(), tiny_clip_tokenizer()
    vocab = tokenizer.get_vocab()
    assert all(vocab[token] == i for token, i in tiny.get_vocab().items())
    ids = tokenizer("Camera moving in a wide bright ice cave").input_ids
    assert ids[0] == tiny.bos_token_id and ids[-1] == tiny.eos_token_id and len(ids) < 77
    tokenizer.save_pretrained(tmp_path)
    again = CLIPTokenizer.from_pretrained(tmp_path)
    assert again(HELD_OUT_PROMPTS[1]).input_ids == tokenizer(HELD_OUT_PROMPTS[1]).input_ids
