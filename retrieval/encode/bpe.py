"""A torch-free CLIP tokenizer: byte-level BPE over the CLIP merges file, giving the same token ids as open_clip's
``SimpleTokenizer`` with its default ``clean="lower"`` (tested against it in tests/test_text_tower.py).

open_clip's tokenizer module imports torch, which costs seconds for a one-shot ``clipdex search``; this one needs
only ``ftfy`` and ``regex`` (open_clip's own dependencies) and reads the merges file that ships inside the
open_clip package (found without importing it). ``BpeTokenizer.encode(text)`` -> content ids (no start/end token);
``sot_token_id`` / ``eot_token_id`` as on open_clip's tokenizer.
"""
from __future__ import annotations

import gzip
import html
import importlib.util
import os
from functools import lru_cache

import ftfy
import regex

MERGES_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # CLIP's vocabulary: 256 bytes x 2 (word-final or not) + merges + 2 specials = 49408
SPECIALS = ("<start_of_text>", "<end_of_text>")


def default_merges_path() -> str:
    """The merges file inside the installed open_clip package (located, not imported)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open_clip is not installed: its BPE merges file is needed")
    return os.path.join(list(spec.submodule_search_locations)[0], MERGES_FILE)


def byte_alphabet() -> tuple[list[str], list[str]]:
    """-> (the character standing for each byte 0..255, the 256 characters in vocabulary order).

    Printable Latin-1 bytes stand for themselves, the others (controls, space, a few more) map in byte order to
    code points from 256 up; the vocabulary lists the printable ones first, then the others."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    others = [b for b in range(256) if b not in set(printable)]
    char = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(others)}
    return [char[b] for b in range(256)], [char[b] for b in printable + others]


def clean_text(text: str) -> str:
    """CLIP's text cleaning: fix mojibake, unescape HTML twice, collapse whitespace, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


class BpeTokenizer:
    """CLIP's byte-level BPE. ``encode(text)`` -> list of ids; ``context_length`` as the model's."""

    def __init__(self, merges_path: str | None = None, context_length: int = 77):
        with gzip.open(merges_path or default_merges_path(), "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")[1:N_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        self.byte_chars, order = byte_alphabet()
        # the byte characters, the same again as word-final symbols, the merges, the specials
        vocab = order + [c + "</w>" for c in order] + ["".join(m) for m in merges]
        vocab += list(SPECIALS)
        self.ids = {s: i for i, s in enumerate(vocab)}
        self.ranks = {m: r for r, m in enumerate(merges)}
        self.sot_token_id, self.eot_token_id = self.ids[SPECIALS[0]], self.ids[SPECIALS[1]]
        self.context_length = context_length
        words = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
        self.pattern = regex.compile("|".join(SPECIALS) + "|" + words, regex.IGNORECASE)
        self._words: dict[str, list[str]] = {}

    def _merge(self, word: str) -> list[str]:
        """Symbols of one pre-token after applying merges, lowest rank first, until none applies."""
        found = self._words.get(word)
        if found is not None:
            return found
        if word in SPECIALS:
            symbols = [word]
        else:
            symbols = list(word[:-1]) + [word[-1] + "</w>"]
            while len(symbols) > 1:
                pairs = {(a, b) for a, b in zip(symbols, symbols[1:])}
                best = min(pairs, key=lambda p: self.ranks.get(p, N_MERGES + 1))
                if best not in self.ranks:
                    break
                merged, i = [], 0
                while i < len(symbols):
                    if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                        merged.append(symbols[i] + symbols[i + 1])
                        i += 2
                    else:
                        merged.append(symbols[i])
                        i += 1
                symbols = merged
        self._words[word] = symbols
        return symbols

    def encode(self, text: str) -> list[int]:
        """Content token ids of ``text`` (no start/end tokens, no truncation)."""
        out: list[int] = []
        for piece in self.pattern.findall(clean_text(text)):
            word = "".join(self.byte_chars[b] for b in piece.encode("utf-8"))
            out.extend(self.ids[s] for s in self._merge(word))
        return out


@lru_cache(maxsize=2)
def load_bpe(merges_path: str | None = None, context_length: int = 77) -> BpeTokenizer:
    """One tokenizer per process (building the tables takes ~0.1 s)."""
    return BpeTokenizer(merges_path, context_length)
