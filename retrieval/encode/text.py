"""Encoding texts of any length, never truncating silently (docs/ALGORITHMS.md section 6).

``encode_long_texts(encoder, texts, strategy)``:

- ``chunk`` (default): texts that fit the context are encoded as they are; longer ones are split into token
  windows of ``context - 2`` tokens with ``overlap``, each window encoded, and the windows pooled
  (``pool_chunks_grouped``: mean of normalised chunk embeddings, renormalised).
- ``longclip``: the encoder's text tower is stretched to 248 positions (``apply_longclip_stretch``) on a copy of
  the model, made once per encoder; texts past 246 tokens are chunk-pooled with 248-token windows. An encoder
  whose model already has a long context (a Long-CLIP checkpoint, ``longclip:...`` specs) is used as it is.
- ``truncate``: explicit truncation to the context; the result counts the truncated texts.

The result says, per text, how many tokens it had and how many windows it took, and how many were truncated.
``long_text_counts`` turns that into the chunked / stretched / truncated counts indexers report, and
``query_strategy`` picks a query's strategy from the table it searches (the one the table was built with).
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from retrieval.algorithms.longtext import apply_longclip_stretch, chunk_token_windows, pool_chunks_grouped
from retrieval.errors import InvalidInput

log = logging.getLogger(__name__)

STRATEGIES = ("chunk", "longclip", "truncate")
DEFAULT_STRATEGY = "chunk"
DEFAULT_OVERLAP = 16
CLIP_WINDOW = 75  # content tokens that fit CLIP's standard 77-token context


@dataclass
class TextEncoding:
    """vectors (n, d) float32 unit rows; n_tokens (n,) content tokens per text; n_chunks (n,) windows encoded;
    truncated: how many texts lost tokens (only with the ``truncate`` strategy)."""

    vectors: np.ndarray
    n_tokens: np.ndarray
    n_chunks: np.ndarray
    truncated: int
    strategy: str
    window: int = CLIP_WINDOW  # content tokens per window (context - 2)

    def describe(self, i: int = 0) -> str:
        """One line about text ``i``: its tokens, and what was done when it did not fit one window."""
        n, c = int(self.n_tokens[i]), int(self.n_chunks[i])
        if n < 0:
            return f"tokens unknown, strategy {self.strategy}"
        if n <= self.window and self.strategy == "longclip" and n > CLIP_WINDOW:
            return f"{n} tokens, strategy longclip: one window of the stretched {self.window + 2}-token context"
        if n <= self.window:
            return f"{n} tokens, strategy {self.strategy} (fits the {self.window}-token window)"
        if self.strategy == "truncate":
            return f"{n} tokens, strategy truncate: TRUNCATED to {self.window}"
        how = "stretched context" if self.strategy == "longclip" else "chunk pooling"
        return f"{n} tokens, strategy {self.strategy}: {c} windows of {self.window} pooled ({how})"


def check_strategy(strategy: str) -> str:
    """Return ``strategy`` or raise ``InvalidInput`` naming the choices."""
    if strategy not in STRATEGIES:
        raise InvalidInput(f"unknown long-text strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return strategy


def long_text_counts(n_tokens, n_chunks, strategy: str, window: int = CLIP_WINDOW) -> dict:
    """Per-batch counts of what happened to long texts: n_tokens, n_chunks (n,) ints, the strategy and the window
    used -> {"long": texts past CLIP's 75 content tokens, "chunked": pooled from > 1 window, "stretched": fit one
    window of a stretched (> 75-token) context, "truncated": cut to the window}."""
    n_tokens = np.asarray(n_tokens, np.int64)
    n_chunks = np.asarray(n_chunks, np.int64)
    long = n_tokens > CLIP_WINDOW
    truncate = strategy == "truncate"
    return {"long": int(long.sum()),
            "chunked": 0 if truncate else int((n_chunks > 1).sum()),
            "stretched": 0 if truncate else int((long & (n_chunks == 1)).sum()),
            "truncated": int((n_tokens > window).sum()) if truncate else 0}


def query_strategy(manifest: dict, table: str, requested: str | None) -> str:
    """The long-text strategy for queries against ``table``: the one asked for, else the one the table was built
    with (``manifest["tables"][table]["long_text"]``), else ``chunk``. Asking for another one than the table's
    logs a warning (query and rows are then encoded differently)."""
    built = (manifest.get("tables", {}).get(table) or {}).get("long_text")
    if requested is None:
        return built or DEFAULT_STRATEGY
    check_strategy(requested)
    if built and requested != built:
        log.warning("table %r was indexed with --long-text %s; querying with %s encodes long queries differently",
                    table, built, requested)
    return requested


class _Stretched:
    """A Long-CLIP-stretched copy of an encoder's model (the original stays as it is). A model whose context is
    already long (a Long-CLIP checkpoint) is used as it is: stretching it again would be wrong."""

    def __init__(self, encoder):
        if encoder.context_length > CLIP_WINDOW + 2:
            self.model, self.context_length = None, encoder.context_length
        else:
            visual = getattr(encoder.model, "visual", None)  # the text tower is all a text encoder needs
            self.model = copy.deepcopy(encoder.model, {id(visual): None} if visual is not None else None)
            self.context_length = apply_longclip_stretch(self.model)


def _stretched(encoder) -> _Stretched:
    return encoder.variant("longclip", _Stretched)


def _pack(windows: list[list[int]], sot: int, eot: int, ctx: int) -> np.ndarray:
    out = np.zeros((len(windows), ctx), np.int64)
    for r, ids in enumerate(windows):
        row = [sot, *ids, eot]
        out[r, : len(row)] = row
    return out


def _encode_tokens(encoder, tokens: np.ndarray, model=None, batch_size: int = 256) -> np.ndarray:
    parts = [encoder.encode_token_batch(tokens[i:i + batch_size], model=model)
             for i in range(0, len(tokens), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim), np.float32)


def encode_long_texts(encoder, texts: Sequence[str], strategy: str = "chunk", overlap: int = DEFAULT_OVERLAP,
                      weighted: bool = False, batch_size: int = 256, warn: bool = True) -> TextEncoding:
    """Encode texts of any length with ``strategy`` (chunk | longclip | truncate) -> ``TextEncoding``.

    ``overlap``: tokens shared by consecutive windows; ``weighted``: pool windows weighted by their length;
    ``warn`` False leaves the truncation warning to the caller (an indexer warns once per run, with its counts).
    Also available as ``encoder.encode_long_texts(texts, strategy)``.
    """
    check_strategy(strategy)
    if isinstance(texts, str):
        raise InvalidInput("encode_long_texts takes a list of strings, not a single string")
    texts = list(texts)
    if any(not isinstance(t, str) for t in texts):
        raise InvalidInput("encode_long_texts takes strings only")
    n = len(texts)
    tok = encoder.tokenizer
    if not hasattr(tok, "encode") or not hasattr(tok, "sot_token_id"):
        # tokenizers without token-level access (HF tokenizers): truncate, and say so
        vecs = encoder.encode_texts(texts, batch_size)
        log.warning("this model's tokenizer gives no token access: texts were truncated to %d tokens",
                    encoder.context_length)
        return TextEncoding(vecs, np.full(n, -1), np.ones(n, np.int64), 0, "truncate", encoder.context_length - 2)
    ids = encoder.token_ids(texts)
    n_tokens = np.array([len(t) for t in ids], np.int64)
    model = None
    ctx = encoder.context_length
    if strategy == "longclip":
        stretched = _stretched(encoder)
        model, ctx = stretched.model, stretched.context_length
    window = ctx - 2
    windows: list[list[int]] = []
    lengths: list[int] = []
    group: list[int] = []
    truncated = 0
    for i, t in enumerate(ids):
        if strategy == "truncate":
            truncated += len(t) > window
            spans = [(0, min(len(t), window))]
        else:
            spans = chunk_token_windows(len(t), window, min(overlap, window - 1))
        for s, e in spans:
            windows.append(t[s:e])
            lengths.append(max(e - s, 1))
            group.append(i)
    if not n:
        return TextEncoding(np.zeros((0, encoder.dim), np.float32), n_tokens, n_tokens, 0, strategy, window)
    tokens = _pack(windows, tok.sot_token_id, tok.eot_token_id, ctx)
    emb = _encode_tokens(encoder, tokens, model, batch_size)
    group_arr = np.asarray(group, np.int64)
    n_chunks = np.bincount(group_arr, minlength=n)
    if len(windows) == n:
        vecs = emb
    else:
        vecs = pool_chunks_grouped(emb, group_arr, n, np.asarray(lengths), weighted)
    if truncated and warn:
        log.warning("%d of %d texts were longer than %d tokens and were truncated (strategy 'truncate')",
                    truncated, n, window)
    return TextEncoding(vecs.astype(np.float32), n_tokens, n_chunks, truncated, strategy, window)
