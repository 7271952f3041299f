"""The real CLIP BPE tokenizer, built offline from the vocabulary file that open_clip ships.

CLIP's `bpe_simple_vocab_16e6.txt.gz` holds the merges; the vocabulary is derived from them exactly as
OpenAI's `clip/simple_tokenizer.py` does, then handed (in memory) to transformers' `CLIPTokenizer`, so the
tiny SDXL uses the same tokenizer class and the same ids as the real one.
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

from serving.core.prompt_text import PROMPT_TOKEN_BUDGET

BPE_VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
# CLIP keeps the first 49152 - 256 - 2 merges of the file (the rest never made it into the vocabulary).
_MERGE_COUNT = 49152 - 256 - 2
BOS_TOKEN, EOS_TOKEN = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable unicode map (same table as GPT-2's)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def bundled_vocab_path() -> Path:
    """Path of the BPE file inside the installed open_clip package (found without importing it)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "open_clip_torch is not installed; it ships the CLIP vocabulary (pip install open_clip_torch)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / BPE_VOCAB_NAME


@lru_cache
def clip_vocab() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """CLIP's vocabulary (token -> id) and BPE merges, derived from the bundled file once per process."""
    with gzip.open(bundled_vocab_path()) as file:
        lines = file.read().decode("utf-8").split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1 : _MERGE_COUNT + 1])
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [symbol + "</w>" for symbol in symbols]
    tokens += ["".join(merge) for merge in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}, merges


def load_clip_tokenizer(pad_token: str = EOS_TOKEN):
    """A transformers `CLIPTokenizer` with CLIP's real vocabulary (49408 ids, model_max_length 77).

    SDXL's first tokenizer pads with `<|endoftext|>`, its second with `!`: pass `pad_token` accordingly.
    """
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab()
    return CLIPTokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=pad_token,
        model_max_length=PROMPT_TOKEN_BUDGET,
    )


@lru_cache
def default_clip_tokenizer():
    """The shared tokenizer used to count prompt tokens when no SDXL pipeline is loaded."""
    return load_clip_tokenizer()
