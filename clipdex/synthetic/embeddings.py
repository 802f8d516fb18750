"""Seeded synthetic embeddings for tests, notebooks and benchmarks: random unit vectors, clustered corpora, and
CLIP-like problems.

:func:`unit_vectors` draws isotropic unit rows; :func:`clustered` a corpus around random cluster centres (ANN and
store tests); :func:`labelled_clusters` balanced labelled classes around centres (classifier tests).

Real CLIP embeddings are not isotropic: every image and text vector shares a large common component (the *cone*,
Liang et al., "Mind the Gap", NeurIPS 2022) and images sit apart from texts along a *modality gap* direction. On top
of that, the class name's text embedding is not exactly where that class's images are (*misalignment*), which is
why zero-shot CLIP errs and why few-shot adapters and retrieval help. :func:`make_clip_like` builds vectors as

    image of class c :  norm( cone·m + (gap/2)·g + u_c        + image_noise · ξ )
    text about c     :  norm( cone·m − (gap/2)·g + v_c        + noise · ξ ),   v_c = norm(u_c + misalign · b_c)

with m the cone direction, g the gap direction (orthonormal), u_c the class's visual concept, b_c a random
per-class misalignment of its name, ξ fresh unit noise in the space orthogonal to m and g. Classes come in
superclasses (fine-grained confusion): u_c = norm(s_k + fine · e_c).

:func:`make_clip_like` returns a classification problem (class prompts, test/val/few-shot images, and a web-like
support corpus of image-caption pairs with noisy captions and near-duplicate images). :func:`make_ann_corpus`
streams a large clustered image corpus in blocks with text-like queries across the gap, for ANN benchmarks.
Everything is unit-norm float32 and fully determined by ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from retrieval.algorithms.arrays import l2_normalize


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows (..., D) scaled to unit length, as float32."""
    return l2_normalize(np.asarray(x)).astype(np.float32)


def unit_vectors(seed: int | np.random.Generator, *shape: int) -> np.ndarray:
    """Unit vectors uniform on the sphere: shape (..., D) float32, from a seed or an existing generator."""
    rng = np.random.default_rng(seed)
    return normalize(rng.standard_normal(shape).astype(np.float32))


def clustered(n: int, d: int = 16, clusters: int = 40, noise: float = 0.35, seed: int = 0) -> np.ndarray:
    """(n, d) unit vectors, each around one of ``clusters`` random unit centres (chosen at random) plus Gaussian
    noise of scale ``noise`` per coordinate."""
    rng = np.random.default_rng(seed)
    centres = unit_vectors(rng, clusters, d)
    lab = rng.integers(0, clusters, n)
    return normalize(centres[lab] + noise * rng.standard_normal((n, d)))


def labelled_clusters(rng: int | np.random.Generator, num_classes: int = 4, per_class: int = 5, dim: int = 16,
                      noise: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class centres (C, D), unit samples (C·per_class, D) grouped by class, and their labels (C·per_class,).

    A sample is its class centre plus Gaussian noise of total norm about ``noise``.
    """
    rng = np.random.default_rng(rng)
    centres = unit_vectors(rng, num_classes, dim)
    labels = np.repeat(np.arange(num_classes), per_class)
    x = centres[labels] + noise * rng.standard_normal((labels.size, dim)).astype(np.float32) / np.sqrt(dim)
    return centres, normalize(x), labels


def make_clip_retrieval_dir(root, dim: int = 16, sizes=(300, 200), bad: bool = True) -> list[np.ndarray]:
    """clip-retrieval's output layout under ``root``: ``img_emb/img_emb_<i>.npy`` (:func:`clustered`, seed i),
    ``text_emb/text_emb_<i>.npy`` (seed 10 + i) and ``metadata/metadata_<i>.parquet`` (image_path, caption), one
    part per entry of ``sizes``. With ``bad``, row 5 of each part is all zeros and row 7 holds a NaN.
    Returns the image vectors of each part as written."""
    root = Path(root)
    for sub in ("img_emb", "text_emb", "metadata"):
        (root / sub).mkdir(parents=True)
    xs = []
    for i, n in enumerate(sizes):
        x = clustered(n, dim, seed=i)
        if bad:
            x[5] = 0.0
            x[7, 3] = np.nan
        np.save(root / "img_emb" / f"img_emb_{i}.npy", x)
        np.save(root / "text_emb" / f"text_emb_{i}.npy", clustered(n, dim, seed=10 + i))
        pq.write_table(pa.table({"image_path": [f"img{i}_{j}.jpg" for j in range(n)],
                                 "caption": [f"caption {i} {j}" for j in range(n)]}),
                       root / "metadata" / f"metadata_{i}.parquet")
        xs.append(x)
    return xs


@dataclass
class _Geometry:
    """Cone direction m, gap direction g, and an r-dim "semantic" basis B orthogonal to both.

    Real CLIP features have a low effective dimension: class concepts and most per-sample variation live in a
    small subspace (B), plus weak isotropic noise over the rest of the space.
    """

    m: np.ndarray
    g: np.ndarray
    basis: np.ndarray  # (r, D)

    @classmethod
    def draw(cls, rng: np.random.Generator, dim: int, latent_dim: int) -> "_Geometry":
        r = min(latent_dim, dim - 2)
        q, _ = np.linalg.qr(rng.standard_normal((dim, r + 2)))
        q = q.astype(np.float32)
        return cls(q[:, 0], q[:, 1], np.ascontiguousarray(q[:, 2:].T))

    def perp(self, x: np.ndarray) -> np.ndarray:
        """Project rows onto the complement of span(m, g) and normalise."""
        x = np.atleast_2d(x)
        x = x - np.outer(x @ self.m, self.m) - np.outer(x @ self.g, self.g)
        return normalize(x)

    def latent(self, rng: np.random.Generator, *shape) -> np.ndarray:
        """Unit vectors drawn uniformly in the semantic subspace: shape (..., D)."""
        z = normalize(rng.standard_normal((*shape, self.basis.shape[0])).astype(np.float32))
        return z @ self.basis

    def iso(self, rng: np.random.Generator, *shape) -> np.ndarray:
        """Unit vectors uniform over the complement of span(m, g): shape (..., D)."""
        d = self.m.shape[0]
        return self.perp(rng.standard_normal((int(np.prod(shape)), d)).astype(np.float32)).reshape(*shape, d)

    def embed(self, content: np.ndarray, side: float, cone: float, gap: float, noise: np.ndarray) -> np.ndarray:
        """norm(cone·m + side·(gap/2)·g + content + noise); side = +1 image, −1 text."""
        return normalize(cone * self.m + side * 0.5 * gap * self.g + content + noise)


@dataclass
class ClipLikeData:
    """A synthetic CLIP-like classification problem (all embeddings unit-norm float32, D = dim).

    class_names (C,); class_prompt_embs (C, T, D) one embedding per template; clip_weights (D, C) the prompt-ensemble
    classifier; class_query_embs (C, D) the single-template query ("a photo of a {}.", template 0) used for SuS-LC.
    test_feats (N, D) / test_labels (N,); val_feats / val_labels (labelled split for hyper-parameter searches);
    shot_feats (C·n_shots, D) / shot_labels, shot_views (C·n_shots, V, D) raw augmented views (GDA/Tip-Adapter).
    Support corpus: support_image_embs (S, D) with paired support_caption_embs (S, D); support_labels (S,) true class
    of each image (−1 = distractor outside the label set); support_caption_class (S,) class the caption names
    (−1 = generic caption); support_dup_of (S,) index of the original for near-duplicates, else −1.
    """

    class_names: list[str]
    class_prompt_embs: np.ndarray
    clip_weights: np.ndarray
    class_query_embs: np.ndarray
    test_feats: np.ndarray
    test_labels: np.ndarray
    val_feats: np.ndarray
    val_labels: np.ndarray
    shot_feats: np.ndarray
    shot_labels: np.ndarray
    shot_views: np.ndarray
    support_image_embs: np.ndarray
    support_caption_embs: np.ndarray
    support_labels: np.ndarray
    support_caption_class: np.ndarray
    support_dup_of: np.ndarray
    params: dict = field(default_factory=dict)


def make_clip_like(num_classes: int = 40, dim: int = 512, n_test: int = 2000, n_support: int = 10000,
                   n_shots: int = 16, seed: int = 0, *, modality_gap: float = 1.2, cone: float = 1.0,
                   caption_noise: float = 1.0, misalign: float = 1.0, image_noise: float = 1.6,
                   fine: float = 0.6, classes_per_super: int = 4, n_templates: int = 7, template_noise: float = 0.3,
                   prompt_noise: float = 0.25, n_val: int | None = None, n_views: int = 10,
                   view_noise: float = 0.35, caption_mention: float = 0.5, caption_wrong: float = 0.15,
                   support_in_classes: float = 0.8, near_dup: float = 0.05, latent_dim: int = 64,
                   iso_noise: float = 0.3) -> ClipLikeData:
    """Generate a seeded CLIP-like few-shot / retrieval classification problem.

    Sizes: ``num_classes`` C, ``dim`` D, ``n_test`` test images (classes balanced), ``n_val`` validation images
    (default ``n_test // 2``), ``n_shots`` few-shot images per class with ``n_views`` augmented views each,
    ``n_support`` image-caption pairs in the support corpus.
    Geometry: ``cone`` weight of the shared mean direction (larger -> all cosines higher and closer together, as in
    real CLIP where unrelated pairs score ~0.1-0.3 image-text, ~0.4-0.6 image-image); ``modality_gap`` distance
    between the image and text sides along the gap direction; ``misalign`` size of each class name's text offset
    b_c (0 = perfectly aligned text, zero-shot is then near its best); ``image_noise`` per-image variation;
    ``fine`` within-superclass spread of class concepts (smaller -> more fine-grained confusion), with
    ``classes_per_super`` classes per superclass.
    Prompts: ``n_templates`` per class; each template adds a shared style direction (``template_noise``) and
    per-prompt noise (``prompt_noise``).
    Captions: with probability ``caption_mention`` a support caption names its image's class (text-side concept
    v_c plus ``caption_noise``), with ``caption_wrong`` it names a random other class, otherwise it is generic
    (half the image's visual concept, more noise). ``support_in_classes`` fraction of support images belong to the
    label set (others are distractors from unrelated concepts); ``near_dup`` fraction are near-duplicates of an
    earlier support image (web re-uploads). Augmented views: shot embedding + ``view_noise`` (raw, not normalised).
    Noise: concepts and most variation live in a random ``latent_dim``-dimensional subspace (CLIP's low effective
    rank); every noise draw adds ``iso_noise`` times as much isotropic noise over the full space.
    """
    rng = np.random.default_rng(seed)
    geo = _Geometry.draw(rng, dim, latent_dim)
    C = num_classes
    n_val = n_test // 2 if n_val is None else n_val

    def noise(level, *shape) -> np.ndarray:
        return level * (geo.latent(rng, *shape) + iso_noise * geo.iso(rng, *shape))

    n_super = max(1, -(-C // classes_per_super))
    supers = geo.latent(rng, n_super)
    u = normalize(supers[np.arange(C) // classes_per_super] + fine * geo.latent(rng, C))  # visual concepts
    v = normalize(u + misalign * geo.latent(rng, C))  # what the class *name* means to the text tower
    n_distr = max(4, C // 2)
    u_distr = geo.latent(rng, n_distr)  # unrelated concepts for distractor images

    def images(concepts: np.ndarray, level: float) -> np.ndarray:
        return geo.embed(concepts, +1, cone, modality_gap, noise(level, concepts.shape[0]))

    def texts(concepts: np.ndarray, level: float) -> np.ndarray:
        return geo.embed(concepts, -1, cone, modality_gap, noise(level, concepts.shape[0]))

    # class prompts: shared template styles + per-prompt noise
    styles = geo.latent(rng, n_templates)
    prompt_content = v[:, None, :] + template_noise * styles[None, :, :]  # (C, T, D)
    prompts = texts(prompt_content.reshape(-1, dim), prompt_noise).reshape(C, n_templates, dim)
    w = normalize(prompts.mean(axis=1)).T.copy()  # (D, C)

    test_labels = np.arange(n_test) % C
    val_labels = np.arange(n_val) % C
    shot_labels = np.repeat(np.arange(C), n_shots)
    test = images(u[test_labels], image_noise)
    val = images(u[val_labels], image_noise)
    shots = images(u[shot_labels], image_noise)
    views = shots[:, None, :] + noise(view_noise, shots.shape[0], n_views)

    # support corpus
    in_cls = rng.random(n_support) < support_in_classes
    s_lab = np.where(in_cls, rng.integers(0, C, n_support), -1)
    s_concept = np.where(in_cls[:, None], u[np.clip(s_lab, 0, None)], u_distr[rng.integers(0, n_distr, n_support)])
    s_img = images(s_concept, image_noise)
    r = rng.random(n_support)
    mention = in_cls & (r < caption_mention)
    wrong = in_cls & (r >= caption_mention) & (r < caption_mention + caption_wrong)
    cap_class = np.full(n_support, -1)
    cap_class[mention] = s_lab[mention]
    if C > 1:
        cap_class[wrong] = (s_lab[wrong] + rng.integers(1, C, int(wrong.sum()))) % C
    # a caption naming class c carries the name's meaning v_c plus the picture's own look (its visual concept)
    named = np.clip(cap_class, 0, None)
    cap_content = np.where((cap_class >= 0)[:, None], v[named] + 0.5 * s_concept, 0.7 * s_concept)
    s_cap = geo.embed(cap_content, -1, cone, modality_gap, noise(caption_noise, n_support))
    dup_of = np.full(n_support, -1)
    n_dup = int(near_dup * n_support)
    if n_dup and n_support > 1:
        targets = rng.choice(np.arange(1, n_support), size=min(n_dup, n_support - 1), replace=False)
        for t in targets:
            src = int(rng.integers(0, t))
            s_img[t] = normalize(s_img[src] + noise(0.05, 1)[0])
            s_lab[t], s_cap[t], cap_class[t], dup_of[t] = s_lab[src], s_cap[src], cap_class[src], src

    params = dict(num_classes=C, dim=dim, n_test=n_test, n_support=n_support, n_shots=n_shots, seed=seed,
                  modality_gap=modality_gap, cone=cone, caption_noise=caption_noise, misalign=misalign,
                  image_noise=image_noise, fine=fine, classes_per_super=classes_per_super,
                  n_templates=n_templates, template_noise=template_noise, prompt_noise=prompt_noise, n_val=n_val,
                  n_views=n_views, view_noise=view_noise, caption_mention=caption_mention,
                  caption_wrong=caption_wrong, support_in_classes=support_in_classes, near_dup=near_dup,
                  latent_dim=latent_dim, iso_noise=iso_noise)
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
    return ClipLikeData(
        class_names=[f"class_{c:03d}" for c in range(C)], class_prompt_embs=f32(prompts), clip_weights=f32(w),
        class_query_embs=f32(prompts[:, 0]), test_feats=f32(test), test_labels=i64(test_labels), val_feats=f32(val),
        val_labels=i64(val_labels), shot_feats=f32(shots), shot_labels=i64(shot_labels), shot_views=f32(views),
        support_image_embs=f32(s_img), support_caption_embs=f32(s_cap), support_labels=i64(s_lab),
        support_caption_class=i64(cap_class), support_dup_of=i64(dup_of), params=params)


@dataclass
class AnnCorpus:
    """A streamed synthetic image corpus for ANN benchmarks.

    ``queries`` (n_queries, D) text-like vectors (across the modality gap) aimed at ``query_clusters``;
    :meth:`blocks` yields the corpus as (block, D) float32 arrays — re-iterable and identical on every pass;
    :meth:`block_clusters` the matching cluster ids. Nothing of size n is held in memory.
    """

    n: int
    dim: int
    block_size: int
    seed: int
    centers: np.ndarray
    queries: np.ndarray
    query_clusters: np.ndarray
    cone: float
    modality_gap: float
    noise: float
    iso_noise: float
    _geo: _Geometry

    def _block(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 1, b])
        size = min(self.block_size, self.n - b * self.block_size)
        cl = rng.integers(0, self.centers.shape[0], size)
        eps = self._geo.latent(rng, size) + self.iso_noise * self._geo.iso(rng, size)
        x = self._geo.embed(self.centers[cl], +1, self.cone, self.modality_gap, self.noise * eps)
        return x, cl.astype(np.int64)

    @property
    def num_blocks(self) -> int:
        return -(-self.n // self.block_size)

    def blocks(self) -> Iterator[np.ndarray]:
        """Yield the corpus in order as (≤block_size, D) float32 blocks."""
        for b in range(self.num_blocks):
            yield self._block(b)[0]

    def block_clusters(self) -> Iterator[np.ndarray]:
        """Yield the cluster id (int64) of every row, block by block, aligned with :meth:`blocks`."""
        for b in range(self.num_blocks):
            yield self._block(b)[1]


def make_ann_corpus(n: int, dim: int = 512, n_queries: int = 1000, seed: int = 0, *, block_size: int = 65536,
                    n_clusters: int = 1024, cone: float = 1.0, modality_gap: float = 0.8, noise: float = 1.0,
                    query_noise: float = 0.6, latent_dim: int = 64, iso_noise: float = 0.3) -> AnnCorpus:
    """A clustered image corpus of ``n`` vectors streamed in blocks of ``block_size``, plus text-like queries.

    Images: norm(cone·m + (gap/2)·g + center_k + noise·ξ) with k uniform over ``n_clusters`` random centers in a
    ``latent_dim`` subspace (ξ = latent noise + ``iso_noise`` × isotropic noise);
    queries: norm(cone·m − (gap/2)·g + center_k + query_noise·ξ), so a query's true neighbours are its cluster's
    images, reached across the modality gap (cross-modal scores are low and compressed, as in real CLIP search).
    Block b is generated from ``(seed, b)`` alone, so any block can be regenerated independently.
    """
    rng = np.random.default_rng([seed, 0])
    geo = _Geometry.draw(rng, dim, latent_dim)
    centers = geo.latent(rng, n_clusters)
    qc = rng.integers(0, n_clusters, n_queries).astype(np.int64)
    eps = geo.latent(rng, n_queries) + iso_noise * geo.iso(rng, n_queries)
    queries = geo.embed(centers[qc], -1, cone, modality_gap, query_noise * eps)
    return AnnCorpus(n=n, dim=dim, block_size=block_size, seed=seed, centers=centers, queries=queries,
                     query_clusters=qc, cone=cone, modality_gap=modality_gap, noise=noise, iso_noise=iso_noise,
                     _geo=geo)
