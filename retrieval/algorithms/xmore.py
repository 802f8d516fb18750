"""X-MoRe: cross-modal retrieval inference (Eom et al., "Cross-Modal Retrieval Meets Inference: Improving Zero-Shot
Classification with Cross-Modal Retrieval", 2023; SeonghaEom/X-MoRe).

The query image f searches the image index of an image-caption corpus (image -> image); the captions of its
neighbours (128 retrieved, duplicate captions dropped, the first K = 16 kept — :func:`dedup_rerank_captions`) are
encoded as text. With T (C, D) the class text features:
    z_img = s f Tᵀ (1, C)            z_cap = s norm(E_text(caption_k)) Tᵀ (K, C)
    c(z)  = 1 − H(p̄)/log C,  p̄ = mean over rows of softmax(z)       (:func:`xmore_confidence`)
    p_t   = a_t softmax(z_img,t) + b_t mean_k softmax(z_cap,t,k)
Stream (:func:`xmore_predict_stream`, the paper's test-time procedure): a_t = c_img,t / Σ_{s≤t} c_img,s and
b_t = c_cap,t / Σ_{s≤t} c_cap,s. Batch (:func:`xmore_predict_batch`, order-independent): the sums run over the whole
batch. clipdex's pipelines use the batch variant (results then do not depend on file order); the stream variant is
kept for fidelity to the paper.

s is the model's own learned logit scale, ``exp(logit_scale)``, as the reference computes it
(``clip/custom_clip.py``: ``logit_scale = self.logit_scale.exp()`` for both the image and the caption logits): 100 for
OpenAI's CLIP (its clamp), 28.5 for clipdex-tiny. The softmaxes and the entropy confidences depend on it; a model
scored at another model's temperature gets near one-hot image probabilities and confidences near 1.

Caption order. The reference keeps two orders: ``ensemble_with_entropy.py``, building its caption cache itself, uses
the first K of the retrieval's image -> image ranking; ``create_cache.py`` re-sorts the deduplicated 128 by
image-caption score, computed with ViT-L/14, a larger model than the RN50 / ViT-B/16 it classifies with. clipdex has
one model: re-sorting with the classifier itself keeps the captions its own zero-shot already agrees with (measured
on clipdex-tiny's shifted set: the captions' vote agrees with zero-shot on 80% of pictures re-sorted, 57% in
retrieval order), which leaves the ensemble nothing to add. So ``DEFAULT_RERANK`` is False (retrieval order, exact
duplicates dropped); ``rerank=True`` is the re-sort by the classifier's own image-caption score.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from retrieval.algorithms.arrays import as_f32, l2_normalize, softmax
from retrieval.algorithms.zeroshot import CLIP_LOGIT_SCALE

log = logging.getLogger(__name__)

CAPTION_PROMPT = "a photo of a "
DEFAULT_K = 16
DEFAULT_RETRIEVE = 128
DEFAULT_RERANK = False  # retrieval order (see the module docstring)


def caption_prompt(caption: str) -> str:
    """The X-MoRe text prompt for a retrieved caption (underscores become spaces, unlike the reference)."""
    return CAPTION_PROMPT + caption.replace("_", " ").strip()


def xmore_confidence(logits) -> float:
    """``1 − H(p̄) / log C`` with ``p̄`` the mean over rows of ``softmax(logits)``: logits (n, C) or (C,) -> float.

    1 for a one-hot p̄, 0 for a uniform one (values below 1e-9 are snapped to 0); C = 1 returns 1.
    """
    z = as_f32(logits, "logits")
    if z.ndim == 1:
        z = z[None]
    c = z.shape[1]
    if c <= 1:
        return 1.0
    p = softmax(z, axis=1).mean(axis=0)
    h = -float(np.sum(np.where(p > 0, p * np.log(np.clip(p, 1e-300, None)), 0.0)))
    conf = 1.0 - h / math.log(c)
    return 0.0 if conf < 1e-9 else float(min(1.0, conf))  # snap rounding noise of a uniform p̄ to exactly 0


def _confidences(img_logits, cap_logits):
    zi = as_f32(img_logits, "img_logits", ndim=2)
    zc = as_f32(cap_logits, "cap_logits", ndim=3)
    if zc.shape[0] != zi.shape[0] or zc.shape[2] != zi.shape[1]:
        raise ValueError(f"cap_logits {zc.shape} must be (N={zi.shape[0]}, K, C={zi.shape[1]})")
    c_img = np.array([xmore_confidence(zi[i : i + 1]) for i in range(zi.shape[0])], dtype=np.float64)
    c_cap = np.array([xmore_confidence(zc[i]) for i in range(zc.shape[0])], dtype=np.float64)
    p_img = softmax(zi, axis=1)
    p_cap = softmax(zc, axis=2).mean(axis=1)
    return c_img, c_cap, p_img, p_cap


def _ratio(c: np.ndarray, denom: np.ndarray) -> np.ndarray:
    # a zero denominator only happens when every confidence so far is 0; give that modality weight 0
    return np.divide(c, denom, out=np.zeros_like(c), where=denom > 0)


def _fuse(a, b, p_img, p_cap):
    p = a[:, None] * p_img + b[:, None] * p_cap
    both_zero = (a == 0) & (b == 0)
    if np.any(both_zero):  # no confidence anywhere: fall back to the plain average
        p[both_zero] = 0.5 * (p_img[both_zero] + p_cap[both_zero])
    return p.astype(np.float32)


def xmore_confidences(img_logits, cap_logits) -> tuple[np.ndarray, np.ndarray]:
    """Per-row confidences ``(c_img (N,), c_cap (N,))`` float64 of img_logits (N, C) and cap_logits (N, K, C).

    A caller that fuses in row blocks sums them over all rows first and passes the sums as ``totals``
    (:func:`xmore_predict_batch`), or carries the running sums as ``prior`` (:func:`xmore_predict_stream`).
    """
    c_img, c_cap, _, _ = _confidences(img_logits, cap_logits)
    return c_img, c_cap


def xmore_predict_stream(img_logits, cap_logits, prior: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Streaming X-MoRe fusion, in row order: img_logits (N, C), cap_logits (N, K, C) -> scores p (N, C).

    ``a_t = c_img,t / Σ_{s≤t} c_img,s``, ``b_t = c_cap,t / Σ_{s≤t} c_cap,s`` (running L1 normalisation, current item
    included), ``p_t = a_t softmax(z_img,t) + b_t mean_k softmax(z_cap,t,k)``. Row t depends on rows 0..t.
    ``prior = (Σ c_img, Σ c_cap)`` of the rows streamed before this call (to continue a stream block by block).
    """
    c_img, c_cap, p_img, p_cap = _confidences(img_logits, cap_logits)
    return _fuse(_ratio(c_img, prior[0] + np.cumsum(c_img)), _ratio(c_cap, prior[1] + np.cumsum(c_cap)), p_img, p_cap)


def xmore_predict_batch(img_logits, cap_logits, totals: tuple[float, float] | None = None) -> np.ndarray:
    """Order-independent X-MoRe fusion: like :func:`xmore_predict_stream` but normalised by the batch's sums,
    ``a_t = c_img,t / Σ_s c_img,s``, ``b_t = c_cap,t / Σ_s c_cap,s``. img_logits (N, C), cap_logits (N, K, C) ->
    (N, C). Permuting the rows permutes the output. The last row equals the stream variant's last row.
    ``totals = (Σ c_img, Σ c_cap)`` over a larger set this batch is a block of (:func:`xmore_confidences`), so
    blocks fused separately give the whole set's result.
    """
    c_img, c_cap, p_img, p_cap = _confidences(img_logits, cap_logits)
    n = c_img.shape[0]
    t_img, t_cap = (c_img.sum(), c_cap.sum()) if totals is None else totals
    return _fuse(_ratio(c_img, np.full(n, float(t_img))), _ratio(c_cap, np.full(n, float(t_cap))), p_img, p_cap)


def xmore_image_logits(feats, class_text, scale: float = CLIP_LOGIT_SCALE) -> np.ndarray:
    """``z_img = s f Tᵀ``: feats (N, D), class_text T (C, D) -> (N, C) float32; ``scale`` s is the model's
    ``exp(logit_scale)`` (100 for OpenAI CLIP)."""
    f = as_f32(feats, "feats", ndim=2)
    t = as_f32(class_text, "class_text", ndim=2)
    return (float(scale) * f @ t.T).astype(np.float32)


def xmore_caption_logits(caption_embs, class_text, scale: float = CLIP_LOGIT_SCALE) -> np.ndarray:
    """``z_cap = s norm(caption_embs) Tᵀ``: caption_embs (N, K, D), class_text T (C, D) -> (N, K, C) float32;
    ``scale`` as in :func:`xmore_image_logits`."""
    e = as_f32(caption_embs, "caption_embs", ndim=3)
    t = as_f32(class_text, "class_text", ndim=2)
    return (float(scale) * np.einsum("nkd,cd->nkc", l2_normalize(e), t)).astype(np.float32)


def dedup_rerank_captions(image_feat, caption_embs, k: int = DEFAULT_K, captions=None,
                          dedup_ip: float | None = 0.99, rerank: bool = True) -> np.ndarray:
    """Pick the K captions X-MoRe uses for one query image.

    image_feat (D,) query image; caption_embs (R, D) text embeddings of the retrieved neighbours' captions in
    retrieval order (paper: R = 128); captions: optional list of R strings. A caption is dropped when its text
    (case- and whitespace-folded) equals an earlier one, or when ``dedup_ip`` is set and its normalised embedding
    has inner product ``>= dedup_ip`` with an earlier kept one. With ``rerank`` the survivors are re-sorted by
    image-caption score ``f · norm(e)`` (descending, stable; the reference's ``create_cache.py``), else they keep
    the retrieval order; the first ``k`` are returned as (k',) int64 positions into caption_embs.
    """
    f = as_f32(image_feat, "image_feat").reshape(-1)
    e = l2_normalize(as_f32(caption_embs, "caption_embs", ndim=2))
    if captions is not None and len(captions) != e.shape[0]:
        raise ValueError(f"{len(captions)} captions but {e.shape[0]} embeddings")
    seen: set[str] = set()
    kept: list[int] = []
    for i in range(e.shape[0]):
        if captions is not None:
            key = " ".join(str(captions[i]).lower().split())
            if key in seen:
                continue
            seen.add(key)
        if dedup_ip is not None and kept and float(np.max(e[kept] @ e[i])) >= dedup_ip:
            continue
        kept.append(i)
    kept_arr = np.asarray(kept, dtype=np.int64)
    if kept_arr.size == 0:
        return kept_arr
    if not rerank:
        return kept_arr[:k]
    scores = e[kept_arr] @ f
    order = np.argsort(-scores, kind="stable")
    return kept_arr[order[:k]]
