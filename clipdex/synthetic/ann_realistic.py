"""A realistic CLIP-like ANN corpus: image vectors and text-like queries where text-to-image search is hard.

The easy corpus (:func:`clipdex.synthetic.embeddings.make_ann_corpus`) puts every image near one of a thousand clean
cluster centres and every query near one of the same centres, so an inverted file finds a query's neighbours in the
first list it probes. Real CLIP corpora are not like that (RoarGraph, Chen et al., VLDB 2024; OOD-DiskANN, Jaiswal
et al., 2022): text queries come from another distribution than the image vectors they search, and the directions
along which images vary most (photographic style, background, lighting, layout: what k-means partitions on) are the
ones a caption says nothing about. This generator models that::

    image :  norm( cone·m + (gap/2)·g + a_sem·S(concepts) + a_vis·V(style) + a_noise·N_img )
    text  :  norm( cone·m − (gap/2)·g + a_sem·S(concepts) +                  a_tnoise·N_txt )

- ``m``, ``g``: the cone and modality-gap directions (Liang et al., "Mind the Gap", NeurIPS 2022);
- ``S(concepts)``: each item mixes 1 to 4 of ``n_concepts`` concepts whose frequencies follow a Zipf law (a few
  concepts are everywhere, most are rare), with Dirichlet weights; concept vectors live in a semantic subspace with
  a power-law variance spectrum (real embeddings have a decaying spectrum, not an isotropic one);
- ``V(style)``: an image-only component, one of ``n_styles`` Zipf-frequent styles plus a continuous variation, in a
  visual subspace orthogonal to the semantic one; text vectors have none of it, so the inverted lists that k-means
  draws along it scatter a caption's neighbours;
- ``N``: power-law noise over the whole space (text noise has its own spectrum, in another basis).

Calibration (``benchmarks/ANN.md``): at 1,000,000 x 512, faiss IVF4096,Flat needs nprobe >= 256 to reach recall@10
0.95 on the text-like queries and HNSW32 at its default efSearch (16) stays below 0.6; mean image-image cosine,
best text-image cosine and the gap's size sit where CLIP ViT-B/32 and ViT-L/14 put them (the report of
:func:`corpus_stats`). Everything is seeded; any block can be regenerated alone from ``(seed, block)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from clipdex.synthetic.embeddings import normalize


def power_law(n: int, alpha: float) -> np.ndarray:
    """Per-dimension standard deviations (n,) with variance ~ (i+1)^-alpha, scaled so the total variance is 1."""
    var = (np.arange(1, n + 1, dtype=np.float64)) ** -alpha
    return np.sqrt(var / var.sum()).astype(np.float32)


def zipf_sampler(n: int, s: float, rng: np.random.Generator, size) -> np.ndarray:
    """Indices in [0, n) drawn with probability ~ 1/(rank+1)^s, shape ``size`` (int64)."""
    p = (np.arange(1, n + 1, dtype=np.float64)) ** -s
    cdf = np.cumsum(p / p.sum())
    return np.minimum(np.searchsorted(cdf, rng.random(size)), n - 1).astype(np.int64)


@dataclass
class RealisticCorpus:
    """A streamed realistic image corpus (:meth:`blocks`) with text-like ``queries`` (q, D) float32.

    The parameters are the model's (see the module docstring); nothing of size n is held in memory."""

    n: int
    dim: int
    seed: int
    queries: np.ndarray
    params: dict
    block_size: int = 65536
    _state: dict = field(default_factory=dict, repr=False)

    @property
    def num_blocks(self) -> int:
        return -(-self.n // self.block_size)

    def block(self, b: int) -> np.ndarray:
        """Rows [b·block_size, ...) as (≤block_size, D) float32 unit vectors."""
        return self.block_with_captions(b, captions=False)[0]

    def block_with_captions(self, b: int, captions: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Block b's image vectors and (``captions``) a caption vector per image: text-like vectors of the same
        concepts, as clip-retrieval's ``text_emb/`` holds beside ``img_emb/``."""
        size = min(self.block_size, self.n - b * self.block_size)
        x, mix = _images(self._state, self.params, np.random.default_rng([self.seed, 1, b]), size, with_mix=True)
        if not captions:
            return x, None
        return x, _texts(self._state, self.params, np.random.default_rng([self.seed, 4, b]), size, mix)

    def blocks(self) -> Iterator[np.ndarray]:
        for b in range(self.num_blocks):
            yield self.block(b)

    def image_like_queries(self, n: int, seed: int = 7) -> np.ndarray:
        """Fresh image vectors from the same distribution (not in the corpus): (n, D) float32."""
        return _images(self._state, self.params, np.random.default_rng([self.seed, 3, seed]), n)

    def text_queries(self, n: int, seed: int = 5) -> np.ndarray:
        """More text-like queries (a different draw from ``queries``): (n, D) float32."""
        return _texts(self._state, self.params, np.random.default_rng([self.seed, 2, seed]), n)


DEFAULTS = {"n_concepts": 20000, "concept_zipf": 1.0, "n_styles": 4000, "style_zipf": 0.8, "sem_dim": 256,
            "sem_alpha": 0.6, "vis_alpha": 0.6, "noise_alpha": 0.3, "cone": 0.6, "gap": 1.2, "a_sem": 0.55,
            "a_vis": 0.3, "style_spread": 0.6, "a_noise": 0.25, "a_tnoise": 0.7, "text_cone": 1.0}


def make_realistic_corpus(n: int, dim: int = 512, n_queries: int = 1000, seed: int = 0, block_size: int = 65536,
                          **params) -> RealisticCorpus:
    """The realistic corpus of ``n`` image vectors (streamed) and ``n_queries`` text-like queries; ``params``
    override :data:`DEFAULTS` (the calibrated values)."""
    p = {**DEFAULTS, **params}
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown parameters {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    rng = np.random.default_rng([seed, 0])
    sem_dim = int(min(p["sem_dim"], dim - 4))
    vis_dim = dim - 2 - sem_dim
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    q = q.astype(np.float32)
    m, g, S, V = q[:, 0], q[:, 1], q[:, 2:2 + sem_dim].T, q[:, 2 + sem_dim:].T  # S (sem_dim, D), V (vis_dim, D)
    sem_sd, vis_sd = power_law(sem_dim, p["sem_alpha"]), power_law(vis_dim, p["vis_alpha"])
    concepts = normalize((rng.standard_normal((int(p["n_concepts"]), sem_dim)) * sem_sd) @ S)
    styles = normalize((rng.standard_normal((int(p["n_styles"]), vis_dim)) * vis_sd) @ V)
    t_basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    state = {"m": m, "g": g, "S": S, "V": V, "sem_sd": sem_sd, "vis_sd": vis_sd, "concepts": concepts,
             "styles": styles, "noise_sd": power_law(dim, p["noise_alpha"]),
             "img_basis": q.T.copy(), "txt_basis": t_basis.astype(np.float32).T.copy()}
    queries = _texts(state, p, np.random.default_rng([seed, 2, 0]), n_queries)
    return RealisticCorpus(n, dim, seed, queries, p, block_size, state)


def _mix(state: dict, p: dict, rng: np.random.Generator, size: int, max_concepts: int) -> tuple[np.ndarray, np.ndarray]:
    """Which concepts (size, max_concepts) int64 and their Dirichlet weights (size, max_concepts): 1..max_concepts
    Zipf-drawn concepts per item (the unused slots weigh 0)."""
    count = rng.integers(1, max_concepts + 1, size)
    idx = zipf_sampler(len(state["concepts"]), p["concept_zipf"], rng, (size, max_concepts))
    w = rng.gamma(1.0, 1.0, (size, max_concepts)).astype(np.float32)
    w[np.arange(max_concepts)[None, :] >= count[:, None]] = 0.0
    return idx, w / w.sum(1, keepdims=True)


def _content(state: dict, idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Semantic content (size, D): the weighted sum of the concepts, unit norm."""
    return normalize(np.einsum("nc,ncd->nd", w, state["concepts"][idx]))


def _noise(sd: np.ndarray, basis: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Power-law noise (size, D) in ``basis`` (D, D) rows, expected squared norm sum(sd²) = 1."""
    return (rng.standard_normal((size, len(sd))).astype(np.float32) * sd) @ basis


def _images(state: dict, p: dict, rng: np.random.Generator, size: int, with_mix: bool = False):
    mix = _mix(state, p, rng, size, 4)
    sem = _content(state, *mix)
    st = state["styles"][zipf_sampler(len(state["styles"]), p["style_zipf"], rng, size)]
    var = (rng.standard_normal((size, len(state["vis_sd"]))).astype(np.float32) * state["vis_sd"]) @ state["V"]
    vis = normalize(st + p["style_spread"] * normalize(var))
    noise = _noise(state["noise_sd"], state["img_basis"], rng, size)
    x = p["cone"] * state["m"] + 0.5 * p["gap"] * state["g"] + p["a_sem"] * sem + p["a_vis"] * vis \
        + p["a_noise"] * noise
    return (normalize(x), mix) if with_mix else normalize(x)


def _texts(state: dict, p: dict, rng: np.random.Generator, size: int, mix=None) -> np.ndarray:
    """Text-like vectors: of fresh concept mixes, or of ``mix`` (a caption names its image's concepts, the
    weightiest ones, in its own words: each weight is jittered)."""
    if mix is None:
        sem = _content(state, *_mix(state, p, rng, size, 3))
    else:
        idx, w = mix
        w = w * rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
        sem = _content(state, idx, w / w.sum(1, keepdims=True))
    noise = _noise(state["noise_sd"], state["txt_basis"], rng, size)
    t = p["text_cone"] * state["m"] - 0.5 * p["gap"] * state["g"] + p["a_sem"] * sem + p["a_tnoise"] * noise
    return normalize(t)


def corpus_stats(x: np.ndarray, t: np.ndarray) -> dict:
    """What CLIP-likeness is checked on: mean image-image and text-image cosine, the mean best text-to-image
    cosine, and the gap ||mean(image) - mean(text)||. x (n, D), t (q, D) unit rows."""
    rng = np.random.default_rng(0)
    a = x[rng.choice(len(x), min(2000, len(x)), replace=False)]
    ii = a @ a.T
    ti = t @ x.T
    return {"image_image_cos": round(float((ii.sum() - len(a)) / (len(a) * (len(a) - 1))), 3),
            "text_image_cos": round(float(ti.mean()), 3),
            "best_text_image_cos": round(float(ti.max(1).mean()), 3),
            "gap": round(float(np.linalg.norm(x.mean(0) - t.mean(0))), 3)}
