"""Texts longer than CLIP's 77-token context (docs/ALGORITHMS.md section 6).

Two strategies:

1. **Long-CLIP positional stretching** (Zhang et al., "Long-CLIP: Unlocking the Long-Text Capability of CLIP",
   ECCV 2024; https://github.com/beichenzbc/Long-CLIP, ``load_from_clip``). The first ``keep`` = 20 positions,
   which CLIP trained well, stay as they are; the remaining 57 are interpolated ``ratio`` = 4 times more finely,
   giving 20 + 4 * 57 = 248 positions. Stretching alone keeps short-text behaviour; the reported gains (COCO T2I
   R@1: LongCLIP-B/16 40.4, L/14 45.1) need the released fine-tuned checkpoints, whose effective positional table
   is rows 0..19 of ``positional_embedding`` plus rows 20.. of ``positional_embedding_res``.
2. **Chunk pooling** (any model): split the content tokens into overlapping windows that fit the context, encode
   each window, and pool ``norm(mean_i norm(e_i))``, optionally weighted by window length.

Array functions are pure (numpy or torch in, numpy float32 out). ``apply_longclip_stretch`` and
``load_longclip_checkpoint`` mutate an open_clip model in place; torch and open_clip are imported only there.

Tokenizing for a stretched model: open_clip's tokenizer takes the context per call, and the stretched text tower
requires exactly that many positions (``CLIP.encode_text`` adds the whole positional table)::

    n_ctx = apply_longclip_stretch(model)                       # 248
    tokens = tokenizer(texts, context_length=n_ctx)             # (N, 248) int64
    emb = model.encode_text(tokens, normalize=True)

open_clip's tokenizer truncates silently past ``context_length``; callers should count content tokens first
(``len(tokenizer.encode(text))`` for the SimpleTokenizer) and switch to chunk pooling, or report truncation, when
``n + 2 > context_length`` (2 = start/end-of-text tokens).
"""

from __future__ import annotations

import logging
import numbers

import numpy as np

from retrieval.algorithms.arrays import l2_normalize as _l2n
from retrieval.algorithms.arrays import to_numpy as _to_numpy

log = logging.getLogger(__name__)

__all__ = [
    "apply_longclip_stretch",
    "chunk_token_windows",
    "load_longclip_checkpoint",
    "longclip_effective_pos_embed",
    "longclip_stretch_pos_embed",
    "pool_chunk_embeddings",
    "pool_chunks_grouped",
]



def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------------------------
# Long-CLIP positional tables
# --------------------------------------------------------------------------------------------------------------
def longclip_stretch_pos_embed(pe, keep: int = 20, ratio: int = 4) -> np.ndarray:
    """Long-CLIP knowledge-preserving stretch of a text positional table (beichenzbc/Long-CLIP, ``load_from_clip``).

    With L rows and ``out`` of ``ratio * L - (ratio - 1) * keep`` rows (77 -> 248 for keep = 20, ratio = 4):
        ``out[j] = pe[j]`` for j < keep;
        ``out[keep + ratio*i + r] = (1 - r/ratio) * pe[keep+i] + (r/ratio) * pe[keep+i+1]``
            for i = 0..L-keep-2, r = 0..ratio-1 (linear interpolation between neighbouring rows);
        ``out[end - ratio + r] = pe[L-1] + (r/ratio) * (pe[L-1] - pe[L-2])`` for r = 0..ratio-1
            (the last ``ratio`` rows extrapolate past the final row).
    Not ``F.interpolate`` and not open_clip's ``resize_text_pos_embed``: the kept rows are not resampled.

    Args:
        pe: (L, D) positional table, L >= 2.
        keep: rows kept unchanged, 0 <= keep <= L - 1.
        ratio: stretch factor, >= 1 (ratio = 1 returns pe).

    Returns:
        (ratio * L - (ratio - 1) * keep, D) float32.
    """
    p = _to_numpy(pe, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 2:
        raise ValueError(f"pe must be an (L, D) table with L >= 2; got shape {p.shape}")
    L, D = p.shape
    keep = _check_int("keep", keep, 0)
    ratio = _check_int("ratio", ratio, 1)
    if keep > L - 1:
        raise ValueError(f"keep must be at most L - 1 = {L - 1}, got {keep}")
    n_out = ratio * L - (ratio - 1) * keep
    out = np.empty((n_out, D), dtype=np.float64)
    out[:keep] = p[:keep]
    frac = np.arange(ratio, dtype=np.float64)[None, :, None] / ratio  # (1, ratio, 1): r / ratio
    lo, hi = p[keep : L - 1], p[keep + 1 : L]  # (L-keep-1, D) neighbouring pairs
    interp = (1.0 - frac) * lo[:, None, :] + frac * hi[:, None, :]  # (L-keep-1, ratio, D)
    out[keep : n_out - ratio] = interp.reshape(-1, D)
    out[n_out - ratio :] = p[L - 1] + frac[0] * (p[L - 1] - p[L - 2])
    return out.astype(np.float32)


def longclip_effective_pos_embed(positional_embedding, positional_embedding_res, keep: int = 20) -> np.ndarray:
    """Effective positional table of a released Long-CLIP checkpoint.

    Long-CLIP's text tower adds ``positional_embedding * mask1 + positional_embedding_res * mask2`` where mask1
    selects the first ``keep`` positions and mask2 the rest, i.e. the table
        ``out[j] = positional_embedding[j]`` for j < keep, ``positional_embedding_res[j]`` otherwise.

    Args:
        positional_embedding: (L, D), L = 248 in the released LongCLIP-B/16 and -L/14.
        positional_embedding_res: (L, D).
        keep: 0 <= keep <= L.

    Returns:
        (L, D) float32.
    """
    a = _to_numpy(positional_embedding)
    b = _to_numpy(positional_embedding_res)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError("positional_embedding and positional_embedding_res must be (L, D) of one shape; "
                         f"got {a.shape} and {b.shape}")
    keep = _check_int("keep", keep, 0)
    if keep > a.shape[0]:
        raise ValueError(f"keep must be at most L = {a.shape[0]}, got {keep}")
    return np.concatenate([a[:keep], b[keep:]], axis=0)


# --------------------------------------------------------------------------------------------------------------
# chunk pooling
# --------------------------------------------------------------------------------------------------------------
def chunk_token_windows(n_tokens_content: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Half-open windows ``[start, end)`` over n content tokens (no SOT/EOT), each at most ``window`` long.

    Windows start every ``stride = window - overlap`` tokens; the last window is aligned to end at n, so every window
    is full length when n >= window and consecutive windows overlap by at least ``overlap`` tokens (the last pair
    possibly more). Use ``window = context_length - 2`` to leave room for the start/end-of-text tokens (75 for CLIP).

    Args:
        n_tokens_content: number of content tokens n >= 0 (n = 0 gives one empty window, [(0, 0)], so an empty
            text still gets an embedding).
        window: tokens per window, >= 1.
        overlap: tokens shared by consecutive windows, 0 <= overlap < window.

    Returns:
        list of (start, end) covering 0..n, in order.
    """
    n = _check_int("n_tokens_content", n_tokens_content, 0)
    window = _check_int("window", window, 1)
    overlap = _check_int("overlap", overlap, 0)
    if overlap >= window:
        raise ValueError(f"overlap must be smaller than window ({window}), got {overlap}")
    if n <= window:
        return [(0, n)]
    stride = window - overlap
    starts = list(range(0, n - window, stride)) + [n - window]
    return [(s, s + window) for s in starts]


def _check_weights(n: int, lengths, weighted: bool) -> np.ndarray | None:
    if not weighted:
        return None
    if lengths is None:
        raise ValueError("weighted pooling needs the chunk lengths")
    w = _to_numpy(lengths, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"lengths must have shape ({n},); got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("lengths must be finite and non-negative")
    return w


def pool_chunk_embeddings(chunk_embs, lengths=None, weighted: bool = False) -> np.ndarray:
    """Pool one text's chunk embeddings: ``norm(sum_i w_i norm(e_i) / sum_i w_i)``.

    Args:
        chunk_embs: (n, D) embeddings of the n chunks, n >= 1.
        lengths: (n,) chunk lengths in tokens; used only when ``weighted``.
        weighted: w_i = lengths[i] (longer chunks count more); otherwise w_i = 1.

    Returns:
        (D,) float32, unit norm.
    """
    e = _to_numpy(chunk_embs)
    if e.ndim != 2 or e.shape[0] == 0:
        raise ValueError(f"chunk_embs must be a non-empty (n, D) array; got shape {e.shape}")
    return pool_chunks_grouped(e, np.zeros(e.shape[0], dtype=np.int64), 1, lengths, weighted)[0]


def pool_chunks_grouped(chunk_embs, group, n_groups: int, lengths=None, weighted: bool = False) -> np.ndarray:
    """Batched chunk pooling: ``out[g] = norm(sum_{i: group[i]=g} w_i norm(e_i) / sum w_i)``.

    Args:
        chunk_embs: (M, D) embeddings of all chunks of all texts.
        group: (M,) int, text index of each chunk, in 0..n_groups-1; every text needs at least one chunk.
        n_groups: number of texts G.
        lengths: (M,) chunk lengths in tokens; used only when ``weighted``.
        weighted: weight each chunk by its length (a group whose lengths sum to 0 falls back to equal weights).

    Returns:
        (G, D) float32, unit-norm rows.
    """
    e = _to_numpy(chunk_embs)
    if e.ndim != 2:
        raise ValueError(f"chunk_embs must have shape (M, D); got {e.shape}")
    M = e.shape[0]
    n_groups = _check_int("n_groups", n_groups, 1)
    g = _to_numpy(group, dtype=None)
    if g.shape != (M,) or (M and not np.issubdtype(g.dtype, np.integer)):
        raise ValueError(f"group must be an integer array of shape ({M},); got {g.dtype} {g.shape}")
    g = g.astype(np.int64)
    if M and (g.min() < 0 or g.max() >= n_groups):
        raise ValueError(f"group ids must lie in 0..{n_groups - 1}")
    counts = np.bincount(g, minlength=n_groups)
    if np.any(counts == 0):
        empty = np.flatnonzero(counts == 0)[:10].tolist()
        raise ValueError(f"every group needs at least one chunk; empty groups: {empty}")
    w = _check_weights(M, lengths, weighted)
    if w is None:
        w = np.ones(M)
    else:
        wsum = np.bincount(g, weights=w, minlength=n_groups)
        w = np.where(wsum[g] > 0, w, 1.0)  # all-zero lengths in a group: equal weights
    acc = np.zeros((n_groups, e.shape[1]), dtype=np.float64)
    np.add.at(acc, g, _l2n(e.astype(np.float64)) * w[:, None])
    # dividing by sum w is a positive rescale, which the final normalisation removes
    return _l2n(acc).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# open_clip models
# --------------------------------------------------------------------------------------------------------------
def _text_tower(model):
    """The module holding positional_embedding / attn_mask: the CLIP itself, or CustomTextCLIP.text."""
    tower = model.text if hasattr(model, "text") and not hasattr(model, "positional_embedding") else model
    pe = getattr(tower, "positional_embedding", None)
    if pe is None or getattr(pe, "ndim", 0) != 2:
        raise TypeError(
            f"{type(model).__name__} has no learned text positional table (open_clip CLIP or CustomTextCLIP with a "
            "TextTransformer tower expected; Hugging Face text towers are not supported)"
        )
    if getattr(tower, "cls_emb", None) is not None:
        raise TypeError("text towers with a CLS embedding (CoCa) are not supported by the Long-CLIP stretch")
    return tower


def _set_text_positions(model, table) -> int:
    """Install an (L', D) positional table in the model's text tower, with an L' causal mask and context length."""
    import torch  # heavy: only the model surgery needs torch; the array functions stay numpy

    tower = _text_tower(model)
    old = tower.positional_embedding
    new = torch.as_tensor(np.asarray(table)).to(device=old.device, dtype=old.dtype)
    if new.ndim != 2 or new.shape[1] != old.shape[1]:
        raise ValueError(f"positional table must be (L, {old.shape[1]}); got {tuple(new.shape)}")
    n_ctx = int(new.shape[0])
    tower.positional_embedding = torch.nn.Parameter(new, requires_grad=old.requires_grad)
    mask = getattr(tower, "attn_mask", None)
    if mask is not None:  # additive causal mask, -inf above the diagonal (open_clip's build_causal_mask)
        causal = torch.full((n_ctx, n_ctx), float("-inf"), device=mask.device, dtype=mask.dtype).triu_(1)
        tower.attn_mask = causal  # the name is a registered (non-persistent) buffer: this replaces it
    for obj in {id(tower): tower, id(model): model}.values():
        if hasattr(obj, "context_length"):
            obj.context_length = n_ctx
    if hasattr(tower, "num_pos"):
        tower.num_pos = n_ctx
    return n_ctx


def apply_longclip_stretch(model, keep: int = 20, ratio: int = 4) -> int:
    """Stretch an open_clip model's text positions in place, Long-CLIP style (beichenzbc/Long-CLIP).

    Replaces the text tower's ``positional_embedding`` (L, W) by ``longclip_stretch_pos_embed(pe, keep, ratio)``
    (L' = ratio * L - (ratio - 1) * keep rows: 77 -> 248), rebuilds the (L', L') causal attention mask, and sets
    ``context_length`` (and ``num_pos`` on a TextTransformer). Tokenize with ``tokenizer(texts, context_length=L')``.
    Works for ``open_clip.CLIP`` (text tower flattened into the model) and ``CustomTextCLIP`` with a
    ``TextTransformer`` (``model.text``).

    Returns:
        the new context length L'.
    """
    tower = _text_tower(model)
    old_ctx = int(tower.positional_embedding.shape[0])
    table = longclip_stretch_pos_embed(tower.positional_embedding, keep=keep, ratio=ratio)
    n_ctx = _set_text_positions(model, table)
    log.info("Long-CLIP stretch: text context %d -> %d (keep=%d, ratio=%d)", old_ctx, n_ctx, keep, ratio)
    return n_ctx


# OpenAI-layout text keys of a Long-CLIP checkpoint and their home in a CustomTextCLIP (model.text.*)
_TEXT_PREFIXES = ("transformer.", "token_embedding.", "ln_final.", "text_projection", "positional_embedding")
_DROP_KEYS = ("input_resolution", "context_length", "vocab_size", "positional_embedding_res")


def load_longclip_checkpoint(model, state_dict, keep: int = 20) -> int:
    """Load a released Long-CLIP checkpoint (LongCLIP-B/16, LongCLIP-L/14) into an open_clip model, in place.

    The checkpoint is in OpenAI CLIP layout with two (248, W) tables; the text positions become
    ``longclip_effective_pos_embed(positional_embedding, positional_embedding_res, keep)`` and the model's context,
    causal mask and positional table are resized to 248 if needed (stretched or not beforehand). All other weights
    load strictly (a wrong architecture raises). Build the model to match the checkpoint, e.g.
    ``open_clip.create_model("ViT-B-16-quickgelu")`` (OpenAI weights use QuickGELU).

    Args:
        model: open_clip ``CLIP`` or ``CustomTextCLIP``.
        state_dict: the checkpoint's state dict (``{"state_dict": ...}`` wrappers and ``module.`` prefixes accepted).
        keep: positions taken from ``positional_embedding``; the rest come from ``positional_embedding_res``.

    Returns:
        the model's new context length (248 for the released checkpoints).
    """
    sd = state_dict.get("state_dict", state_dict) if isinstance(state_dict, dict) else state_dict
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    if "positional_embedding" not in sd or "positional_embedding_res" not in sd:
        raise ValueError("not a Long-CLIP checkpoint: positional_embedding and positional_embedding_res are required")
    table = longclip_effective_pos_embed(sd["positional_embedding"], sd["positional_embedding_res"], keep=keep)
    prefix = "text." if _text_tower(model) is not model else ""
    mapped = {}
    for k, v in sd.items():
        if k in _DROP_KEYS or k == "positional_embedding":
            continue
        mapped[prefix + k if prefix and k.startswith(_TEXT_PREFIXES) else k] = v
    expected = set(model.state_dict()) - {prefix + "positional_embedding"}
    missing, unexpected = sorted(expected - set(mapped)), sorted(set(mapped) - expected)
    if missing or unexpected:  # checked before touching the model
        raise ValueError(f"checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    n_ctx = _set_text_positions(model, table)
    model.load_state_dict(mapped, strict=False)
    log.info("Loaded Long-CLIP checkpoint: text context %d", n_ctx)
    return n_ctx
