"""The offline tokenizer is CLIP's: same ids, same 77-token truncation."""

from serving.core.prompt_text import PROMPT_TOKEN_BUDGET
from serving.models.clip_tokenizer import load_clip_tokenizer


def test_known_text_gives_clip_ids():
    tokenizer = load_clip_tokenizer()
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tokenizer) == 49408


def test_punctuation_and_case_follow_clip():
    tokenizer = load_clip_tokenizer()
    # CLIP lower-cases and splits punctuation: "Forest," -> "forest</w>" (4167), ",</w>" (267)
    assert tokenizer("Forest, night").input_ids == [49406, 4167, 267, 930, 49407]


def test_truncation_keeps_77_with_eos_last():
    tokenizer = load_clip_tokenizer()
    ids = tokenizer(" ".join(["cat"] * 100), truncation=True, max_length=PROMPT_TOKEN_BUDGET).input_ids
    assert len(ids) == 77
    assert ids[0] == 49406 and ids[-1] == 49407
    assert ids[1:-1] == [2368] * 75


def test_padding_tokens_of_the_two_sdxl_tokenizers():
    first, second = load_clip_tokenizer(), load_clip_tokenizer(pad_token="!")
    padded = first("cat", padding="max_length", max_length=8).input_ids
    assert padded == [49406, 2368, 49407, 49407, 49407, 49407, 49407, 49407]
    assert second("cat", padding="max_length", max_length=8).input_ids[3:] == [0] * 5
