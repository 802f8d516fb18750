"""One small runner per classification method: it holds what the method needs (classifier, support set, cache,
fitted parameters) and turns a block of test features into class probabilities by calling the pure functions.

Every runner works on row blocks of the test features, so no (N, M) matrix is ever built: a block of B rows
costs O(B · M) for support/cache methods. Methods whose formula uses statistics of *all* test rows (TIP-X's global
KL/affinity ranges, X-MoRe's batch confidence sums) first make a cheap pass over the blocks (``fit``) to collect
them, so the streamed result equals the whole-matrix one. ``probs`` returns (B, C) rows summing to 1: softmax of
the method's logits (cosine-scale logits — ProKeR, RECO — are multiplied by CLIP's logit scale 100 first), or
X-MoRe's fused scores renormalised per image.
"""
from __future__ import annotations

import logging
from typing import Iterator

import numpy as np

from retrieval import algorithms  # RECO's names (torch) load on first use, through the package
from retrieval.algorithms.arrays import l2_normalize, one_hot, softmax
from retrieval.algorithms.gda import gda_logits
from retrieval.algorithms.proker import proker_fit, proker_predict
from retrieval.algorithms.tip_adapter import tip_adapter_logits
from retrieval.algorithms.tipx import tipx_kl, tipx_log_signatures, tipx_logits
from retrieval.algorithms.xmore import (
    DEFAULT_RERANK,
    xmore_caption_logits,
    xmore_confidences,
    xmore_image_logits,
    xmore_predict_batch,
    xmore_predict_stream,
)
from retrieval.algorithms.zeroshot import CLIP_LOGIT_SCALE, zeroshot_logits
from retrieval.classify.support import caption_neighbours, image_to_texts, take_vectors, text_to_images

log = logging.getLogger(__name__)
BYTES_PER_PAIR = 48  # working memory per (test row, support item) pair in TIP-X: A, exp, KL (float64) and copies


def block_rows(m: int, budget: int = 256 << 20, cap: int = 4096) -> int:
    """Rows per block so that a (B, M) working set of ~BYTES_PER_PAIR bytes per pair stays under ``budget``."""
    return int(max(1, min(cap, budget // (BYTES_PER_PAIR * max(m, 1)))))


def blocks(n: int, rows: int) -> Iterator[slice]:
    for s in range(0, n, rows):
        yield slice(s, min(n, s + rows))


def stream_probs(runners: list, feats: np.ndarray, budget: int = 256 << 20) -> Iterator[tuple[slice, dict]]:
    """Blocks of ``(rows, {name: probabilities (B, C)})`` over test features (N, D), B from :func:`block_rows` for
    the widest runner; runners with whole-run statistics make their ``fit`` pass first."""
    rows = block_rows(max(r.width for r in runners), budget)
    for r in runners:
        r.fit(feats, rows)
    for sl in blocks(len(feats), rows):
        yield sl, {r.name: r.probs(feats[sl], sl) for r in runners}


class Runner:
    name = ""
    width = 1  # M of the (B, M) work per row, for block sizing
    params: dict = {}

    def fit(self, feats: np.ndarray, rows: int) -> None:
        """Pass over all test features before ``probs`` (only methods with whole-run statistics need it)."""

    def probs(self, fb: np.ndarray, sl: slice) -> np.ndarray:
        raise NotImplementedError


class ZeroShot(Runner):
    name = "zeroshot"

    def __init__(self, W):
        self.W = W
        self.width = W.shape[1]

    def probs(self, fb, sl):
        return softmax(zeroshot_logits(fb, self.W), axis=1)


class TipX(Runner):
    """TIP-X over a labelled support set (SuS-X's retrieved one, or real shots)."""

    def __init__(self, name, W, support_feats, support_labels, params, ref_affinity=None):
        self.name, self.W, self.S, self.params = name, W, support_feats, dict(params)
        self.L = one_hot(support_labels, W.shape[1])
        self.logq = tipx_log_signatures(support_feats, W)  # (M, C) float64, once for all blocks
        self.width = max(1, len(support_feats))
        self.ref = ref_affinity  # [min, max] of the validation affinity when searched (as the reference)
        self.kl_range = None

    def fit(self, feats, rows):
        if self.params.get("gamma", 0) == 0 or len(self.S) == 0:
            return
        lo = hi = alo = ahi = None
        for sl in blocks(len(feats), rows):
            kl = tipx_kl(feats[sl], self.S, self.W, support_logsig=self.logq)
            aff = feats[sl] @ self.S.T
            lo = kl.min() if lo is None else min(lo, kl.min())
            hi = kl.max() if hi is None else max(hi, kl.max())
            alo = aff.min() if alo is None else min(alo, aff.min())
            ahi = aff.max() if ahi is None else max(ahi, aff.max())
            del kl, aff
        self.kl_range = (float(lo), float(hi))
        if self.ref is None:
            self.ref = np.array([alo, ahi], np.float32)

    def probs(self, fb, sl):
        if len(self.S) == 0:
            return softmax(CLIP_LOGIT_SCALE * fb @ self.W, axis=1)
        z = tipx_logits(fb, self.S, self.L, self.W, kl_range=self.kl_range, ref_affinity=self.ref,
                        support_logsig=self.logq, **self.params)
        return softmax(z, axis=1)


class TipAdapter(Runner):
    name = "tip"

    def __init__(self, W, keys, values, alpha, beta):
        self.W, self.keys, self.values = W, keys, values
        self.params = dict(alpha=alpha, beta=beta)
        self.width = max(1, len(keys))

    def probs(self, fb, sl):
        return softmax(tip_adapter_logits(fb, self.keys, self.values, self.W, **self.params), axis=1)


class GDA(Runner):
    name = "gda"

    def __init__(self, W, Wg, b, alpha):
        self.W, self.Wg, self.b, self.params = W, Wg, b, dict(alpha=alpha)
        self.width = W.shape[1]

    def probs(self, fb, sl):
        return softmax(gda_logits(fb, self.W, self.Wg, self.b, self.params["alpha"]), axis=1)


class ProKeR(Runner):
    """ProKeR: the (n, n) system is solved once (:func:`proker_fit`), then each block is scored."""

    name = "proker"

    def __init__(self, W, keys, labels, beta, lam):
        self.W, self.keys, self.params = W, keys, dict(beta=beta, lam=lam)
        self.alpha = proker_fit(keys, labels, W, beta, lam)
        self.width = max(1, len(keys))

    def probs(self, fb, sl):
        z = proker_predict(self.keys, self.W, self.alpha, fb, self.params["beta"])
        return softmax(CLIP_LOGIT_SCALE * z, axis=1)


class XMoRe(Runner):
    """X-MoRe: captions of image neighbours. ``fit`` retrieves each image's K caption ids once (kept: N·K ints)
    and, for the batch form, sums the confidences; ``probs`` fetches the caption vectors again per block."""

    def __init__(self, ix, W, k, retrieve, stream=False, scale=CLIP_LOGIT_SCALE, rerank=DEFAULT_RERANK):
        self.name = "xmore-stream" if stream else "xmore"
        self.ix, self.T, self.k, self.retrieve, self.stream = ix, np.ascontiguousarray(W.T), k, retrieve, stream
        self.scale = float(scale)  # the model's exp(logit_scale), as the reference scores both modalities
        self.rerank = bool(rerank)
        self.width = max(retrieve * W.shape[0] // 12, W.shape[1] * k)  # (B, R, D) caption vectors, (B, K, C) logits
        self.params = dict(k=k, retrieve=retrieve, fusion="stream" if stream else "batch",
                           logit_scale=round(self.scale, 2), order="image-caption score" if rerank else "retrieval")

    def _logits(self, fb, sl):
        caps = take_vectors(self.ix, self.cap_ids[sl], "text_vector")
        return xmore_image_logits(fb, self.T, self.scale), xmore_caption_logits(caps, self.T, self.scale)

    def fit(self, feats, rows):
        self.cap_ids = np.full((len(feats), self.k), -1, np.int64)
        for sl in blocks(len(feats), rows):
            self.cap_ids[sl] = caption_neighbours(self.ix, feats[sl], self.k, self.retrieve, self.rerank)
        k_eff = int((self.cap_ids >= 0).sum(1).min()) if len(feats) else self.k
        if k_eff < self.k:
            log.warning("xmore: some images found only %d distinct captions of the %d asked; using %d for all",
                        k_eff, self.k, k_eff)
            self.cap_ids = np.ascontiguousarray(self.cap_ids[:, :k_eff])
        self.params["k"] = k_eff
        self.totals = [0.0, 0.0]
        if not self.stream:
            for sl in blocks(len(feats), rows):
                c_img, c_cap = xmore_confidences(*self._logits(feats[sl], sl))
                self.totals[0] += float(c_img.sum())
                self.totals[1] += float(c_cap.sum())

    def probs(self, fb, sl):
        zi, zc = self._logits(fb, sl)
        if self.stream:  # blocks arrive in order; carry the running sums
            p = xmore_predict_stream(zi, zc, prior=tuple(self.totals))
            c_img, c_cap = xmore_confidences(zi, zc)
            self.totals[0] += float(c_img.sum())
            self.totals[1] += float(c_cap.sum())
        else:
            p = xmore_predict_batch(zi, zc, totals=tuple(self.totals))
        p = p.astype(np.float64)
        return p / np.maximum(p.sum(1, keepdims=True), 1e-300)


class Reco(Runner):
    """RECO: refine images by their neighbours' captions and classes by their neighbours' images; score v̄ · t̄."""

    def __init__(self, ix, W, k, weight=1.0, fusers=None, blend=1.0):
        self.name = "reco"
        self.ix, self.k, self.weight, self.fusers, self.blend, self.W = ix, k, weight, fusers, blend, W
        self.params = dict(k=k, fusion="trained fuser" if fusers else "mean",
                           **({"blend": blend} if fusers else {"weight": weight}))
        self.width = W.shape[1]
        T = np.ascontiguousarray(W.T)
        self.t_bar = self._fuse(1, T, text_to_images(ix, T, k))  # (C, D)

    def _fuse(self, which, query, retrieved):
        if self.fusers is None:
            return algorithms.reco_mean_fuse(query, retrieved, self.weight)
        return algorithms.reco_refine(self.fusers[which], query, retrieved)

    def cosines(self, fb) -> tuple[np.ndarray, np.ndarray]:
        """Zero-shot f·W and RECO v̄·t̄ cosines of image features fb (n, D): two (n, C)."""
        v_bar = self._fuse(0, fb, image_to_texts(self.ix, fb, self.k))
        return fb @ self.W, v_bar @ self.t_bar.T

    def probs(self, fb, sl):
        zs, fused = self.cosines(fb)
        if self.blend == 1.0:  # RECO as trained
            return softmax(CLIP_LOGIT_SCALE * fused, axis=1)
        return softmax(CLIP_LOGIT_SCALE * algorithms.reco_blend_logits(zs, fused, self.blend), axis=1)


def gda_samples(views: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GDA treats every augmented view as a sample: (n, V, D) unit views -> ((n·V, D), (n·V,) labels)."""
    n, v, d = views.shape
    return l2_normalize(views.reshape(n * v, d)).astype(np.float32), np.repeat(labels, v)
