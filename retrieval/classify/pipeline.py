"""Classification runs: gather each method's inputs (text classifier, support sets, captions, shots), encode the
images once, and stream predictions block by block.

    run = ClassificationRun(classes, ClassifyOptions(methods=["all"], support="web.clipdex"), encoder)
    for pred in run.predict(paths, labels):      # one Prediction per image, every method's top-k
        ...
    run.evaluation.summary()                       # top-1/top-5 accuracy and most-confused pairs per method

Memory: the test features (N · D floats) are kept; every method works on blocks of B test rows, with
B = :func:`methods.block_rows` (a 256 MiB budget for the (B, M) work of the widest method at ~48 bytes per
(row, support item) pair; e.g. M = 100,000 support items -> B = 55 rows), so nothing grows as N · M. Fixed costs:
the support set (M · D float32) with its one-hot labels (M · C float32) and log-signatures (M · C float64) for
TIP-X, C · D for the classifier, N · K caption ids for X-MoRe.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from retrieval.errors import InvalidInput
from retrieval.classify import methods as M
from retrieval.classify.evaluate import Evaluation

log = logging.getLogger(__name__)

METHODS = ("zeroshot", "susx", "xmore", "xmore-stream", "reco", "tip", "tipx", "gda", "proker")
ALL = ("zeroshot", "susx", "xmore", "reco", "tip", "tipx", "gda", "proker")
SUPPORT_METHODS = ("susx", "xmore", "xmore-stream", "reco")
SHOT_METHODS = ("tip", "tipx", "gda", "proker")
SUSX_QUERY = "A photo of a {}."
GDA_ALPHA = 10.0  # no paper default (the paper searches); chosen on indexers/samples/embeddings.py — use --tune


@dataclass
class ClassifyOptions:
    methods: Sequence[str] = ("zeroshot",)
    templates: str = "openai80"        # openai80 | simple7 | single | a template file
    descriptions: str | None = None    # CuPL-style JSON {class: [sentences]}
    support: str | None = None         # a clipdex image index made with the same model
    shots: str | None = None           # folder per class, or a manifest with a label column
    tune: str | None = None            # a labelled split: grid-search hyper-parameters on it
    fuser: str | None = None           # RECO fusers trained by train_reco (clipdex train-reco)
    top_k: int = 5
    batch_size: int = 64
    workers: int = 0
    per_class: int = 100
    dedup_ip: float = 0.94
    xmore_k: int = 16
    xmore_retrieve: int = 128
    reco_k: int = 10
    reco_weight: float = 1.0
    n_views: int = 10
    memory_budget: int = 256 << 20
    use_cache: bool = True


@dataclass
class Prediction:
    path: str
    label: str | None
    top: dict = field(default_factory=dict)  # method -> [(class, probability)], best first


def resolve_methods(asked: Sequence[str], opts: ClassifyOptions) -> list[str]:
    """The methods to run: ``all`` means every method the inputs allow (support, shots)."""
    asked = list(dict.fromkeys(asked))
    unknown = [m for m in asked if m not in METHODS + ("all",)]
    if unknown:
        raise InvalidInput(f"unknown method {unknown[0]!r}; choose from {', '.join(METHODS)} or all")
    if "all" in asked:
        out = [m for m in ALL if (m not in SUPPORT_METHODS or opts.support) and (m not in SHOT_METHODS or opts.shots)]
        return list(dict.fromkeys(out + [m for m in asked if m != "all"]))
    for m in asked:
        if m in SUPPORT_METHODS and not opts.support:
            raise InvalidInput(f"--method {m} needs --support INDEX (a clipdex image index made with the same model)")
        if m in SHOT_METHODS and not opts.shots:
            raise InvalidInput(f"--method {m} needs --shots (a folder per class or a manifest with a label column)")
    return asked


def load_fusers(path: str, model: str):
    """The (image, text) RECO fusers saved by ``clipdex train-reco``; refused for another model."""
    import torch

    from retrieval.algorithms.reco import RecoFuser

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        fusers = []
        for key in ("image_fuser", "text_fuser"):
            f = RecoFuser(int(state["dim"]), int(state["heads"]))
            f.load_state_dict(state[key])
            fusers.append(f.eval())
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise InvalidInput(f"cannot load RECO fuser {path}: {str(exc).splitlines()[0][:160]}") from None
    if state.get("model") not in (None, model):
        raise InvalidInput(f"RECO fuser {path} was trained on {state['model']} embeddings, not {model}")
    return fusers


class ClassificationRun:
    """Everything a run needs, prepared once: classifier W (D, C), support index, shots, tuned parameters.

    ``notes`` collects what a user should be told (support set sizes, cache use, chosen hyper-parameters).
    """

    def __init__(self, classes: Sequence[str], options: ClassifyOptions, encoder,
                 on_progress: Callable[[str, int, int], None] | None = None):
        from retrieval.classify.inputs import check_classes

        self.classes = check_classes(classes)
        self.opts = options
        self.encoder = encoder
        self.on_progress = on_progress
        self.notes: list[str] = []
        self.methods = resolve_methods(options.methods, options)
        self.ix = None
        self.W = self._classifier()
        self.val = self._split(options.tune, "--tune") if options.tune else None
        self.runners: list[M.Runner] = []
        try:
            self._prepare()
        except Exception:
            self.close()
            raise
        self.evaluation = Evaluation(self.classes, [r.name for r in self.runners])

    def close(self) -> None:
        if self.ix is not None:
            self.ix.close()
            self.ix = None

    # -- inputs ------------------------------------------------------------------------------------------------
    def _classifier(self) -> np.ndarray:
        from retrieval.algorithms.zeroshot import (TEMPLATE_SET_NAMES, build_text_classifier, get_templates, load_descriptions,
                               load_templates)

        o = self.opts
        try:
            templates = get_templates(o.templates) if o.templates in TEMPLATE_SET_NAMES else load_templates(o.templates)
            self.descriptions = load_descriptions(o.descriptions) if o.descriptions else None
        except FileNotFoundError as exc:
            raise InvalidInput(f"file not found: {exc.filename}") from None
        except (ValueError, OSError) as exc:
            raise InvalidInput(str(exc).splitlines()[0]) from None
        if self.descriptions:
            lost = [c for c in self.descriptions if c not in self.classes and c.replace("_", " ") not in self.classes]
            if lost:
                log.warning("descriptions of %d names that are not classes are ignored (e.g. %r)", len(lost), lost[0])
        # CuPL-style descriptions can pass the 77-token context: pool them rather than truncate
        encode = lambda texts: self.encoder.encode_long_texts(texts).vectors  # noqa: E731
        return build_text_classifier(self.classes, templates, encode, self.descriptions)

    def _split(self, source: str, what: str):
        """A labelled split's (features (n, D), labels (n,)); unreadable images are an error here."""
        from retrieval.classify.inputs import encode_images, load_labelled

        split = load_labelled(source, self.classes, what)
        feats, errors = encode_images(self.encoder, split.paths, self.opts.batch_size, self.opts.workers)
        if errors:
            raise InvalidInput(f"{what}: cannot read {errors[0][0]}: {errors[0][1]}")
        return feats, split.labels

    def _support(self):
        if self.ix is None:
            from retrieval.classify.support import open_support

            self.ix = open_support(self.opts.support, self.encoder)
        return self.ix

    def _skip(self, method: str, why: str) -> None:
        """In ``all`` a method the inputs cannot serve is skipped with a warning; asked by name it is an error."""
        if "all" in self.opts.methods and method not in self.opts.methods:
            log.warning("skipping %s: %s", method, why)
            self.methods.remove(method)
            return
        raise InvalidInput(why)

    def _prepare(self) -> None:
        o = self.opts
        shots = self._shots() if any(m in SHOT_METHODS for m in self.methods) else None
        for m in list(self.methods):
            if m == "zeroshot":
                self.runners.append(M.ZeroShot(self.W))
            elif m == "susx":
                self.runners.append(self._susx())
            elif m in ("xmore", "xmore-stream", "reco"):
                from retrieval.classify.support import captioned_count

                ix = self._support()
                n = captioned_count(ix)
                if n == 0:
                    self._skip(m, f"{m} needs captions, but support index {o.support} has none; index an "
                                  f"image-caption manifest (path, caption columns)")
                    continue
                if m == "reco":
                    if n < o.reco_k:
                        log.warning("reco: the support index holds %d captioned images, fewer than k = %d", n, o.reco_k)
                    fusers = load_fusers(o.fuser, ix.model) if o.fuser else None
                    self.runners.append(M.Reco(ix, self.W, min(o.reco_k, n), o.reco_weight, fusers))
                else:
                    if n < o.xmore_k:
                        log.warning("xmore: the support index holds %d captioned images, fewer than K = %d",
                                    n, o.xmore_k)
                    self.runners.append(M.XMoRe(ix, self.W, o.xmore_k, min(o.xmore_retrieve, n) or 1,
                                                stream=m == "xmore-stream"))
            elif m in SHOT_METHODS:
                r = self._few_shot(m, *shots)
                if r is not None:
                    self.runners.append(r)
        for r in self.runners:
            if r.params:
                self.notes.append(f"{r.name}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in r.params.items()))

    def _susx(self) -> M.Runner:
        from retrieval.classify.support import sus_lc_support
        from retrieval.algorithms.tipx import DEFAULT_TIPX, tipx_search

        o, ix = self.opts, self._support()
        if self.descriptions:
            queries = [self.descriptions.get(c) or self.descriptions.get(c.replace("_", " ")) or
                       [SUSX_QUERY.format(c.replace("_", " "))] for c in self.classes]
        else:
            queries = [[SUSX_QUERY.format(c.replace("_", " "))] for c in self.classes]
        s = sus_lc_support(ix, self.encoder, self.classes, queries, o.per_class, o.dedup_ip, o.use_cache)
        where = f"from cache {s.cache_path}" if s.from_cache else (
            f"retrieved from {o.support}" + (f", cached in {s.cache_path}" if s.cache_path else ""))
        self.notes.append(f"susx: support set of {len(s.ids)} images ({o.per_class} per class asked), {where}")
        if s.short:
            c, n = s.short[0]
            log.warning("susx: %d classes got fewer than %d support images (e.g. %r: %d); the index holds only "
                        "%d images", len(s.short), o.per_class, c, n, ix.store.count("images"))
        params, ref = dict(DEFAULT_TIPX), None
        if self.val is not None and len(s.ids):
            vf, vl = self.val
            hp = tipx_search(vf, vl, s.feats, M.one_hot(s.labels, len(self.classes)), self.W)
            params = {k: hp[k] for k in ("alpha", "beta", "gamma")}
            aff = vf @ s.feats.T
            ref = np.array([aff.min(), aff.max()], np.float32)
            self.notes.append(f"susx: TIP-X searched on {o.tune} (val accuracy {100 * hp['acc']:.1f}%)")
        return M.TipX("susx", self.W, s.feats, s.labels, params, ref)

    def _shots(self):
        from retrieval.classify.inputs import encode_views, load_labelled

        split = load_labelled(self.opts.shots, self.classes, "shots")
        if split.missing_classes:
            log.warning("shots: no images for %d classes (e.g. %r); they rely on the zero-shot classifier",
                        len(split.missing_classes), split.missing_classes[0])
        views = encode_views(self.encoder, split.paths, self.opts.n_views)
        return split, views

    def _few_shot(self, m, split, views) -> M.Runner | None:
        from retrieval.algorithms.gda import gda_fit, gda_search_alpha
        from retrieval.algorithms.proker import DEFAULT_BETA as PK_BETA, DEFAULT_LAMBDA as PK_LAM
        from retrieval.algorithms.tip_adapter import DEFAULT_ALPHA, DEFAULT_BETA, build_cache, tip_adapter_search
        from retrieval.algorithms.tipx import DEFAULT_TIPX, tipx_search

        C = len(self.classes)
        keys, values = build_cache(views, split.labels, C)  # Tip-Adapter keys: mean of the views, normalised
        if m == "tip":
            a, b = DEFAULT_ALPHA, DEFAULT_BETA
            if self.val is not None:
                a, b, _ = tip_adapter_search(*self.val, keys, values, self.W)
            return M.TipAdapter(self.W, keys, values, a, b)
        if m == "tipx":
            params, ref = dict(DEFAULT_TIPX), None
            if self.val is not None:
                hp = tipx_search(*self.val, keys, values, self.W)
                params = {k: hp[k] for k in ("alpha", "beta", "gamma")}
                aff = self.val[0] @ keys.T
                ref = np.array([aff.min(), aff.max()], np.float32)
            return M.TipX("tipx", self.W, keys, split.labels, params, ref)
        if m == "gda":
            if split.missing_classes:
                self._skip("gda", f"gda needs shots of every class; none for {split.missing_classes[0]!r}")
                return None
            x, y = M.gda_samples(views, split.labels)
            Wg, b = gda_fit(x, y, C)
            alpha = gda_search_alpha(*self.val, self.W, Wg, b)[0] if self.val is not None else GDA_ALPHA
            return M.GDA(self.W, Wg, b, alpha)
        return M.ProKeR(self.W, keys, split.labels, PK_BETA, PK_LAM)

    # -- running -----------------------------------------------------------------------------------------------
    def encode(self, paths: Sequence[str]) -> tuple[list[str], np.ndarray]:
        """Encode every image once; unreadable ones are dropped with a warning. -> (paths kept, feats (n, D))."""
        from retrieval.classify.inputs import encode_images

        cb = None if self.on_progress is None else (lambda d, t: self.on_progress("encode", d, t))
        feats, errors = encode_images(self.encoder, paths, self.opts.batch_size, self.opts.workers, cb)
        if errors:
            log.warning("skipped %d unreadable images (first: %s: %s)", len(errors), *errors[0])
        ok = ~np.isnan(feats).any(1)
        if not ok.any():
            raise InvalidInput("none of the images could be read")
        return [p for p, k in zip(paths, ok) if k], np.ascontiguousarray(feats[ok])

    def predict_features(self, feats: np.ndarray) -> Iterator[tuple[slice, dict]]:
        """Blocks of ``(rows, {method: probabilities (B, C)})`` over test features (N, D)."""
        yield from M.stream_probs(self.runners, feats, self.opts.memory_budget)

    def predict(self, paths: Sequence[str], labels: dict | None = None) -> Iterator[Prediction]:
        """One :class:`Prediction` per readable image; labelled images also update ``self.evaluation``."""
        t0 = time.monotonic()
        paths, feats = self.encode(paths)
        labels = labels or {}
        pos = {c: i for i, c in enumerate(self.classes)}
        y = np.array([pos.get(labels.get(p), -1) for p in paths], np.int64)
        if labels:
            bad = sorted({labels[p] for p in paths if p in labels and labels[p] not in pos})
            if bad:
                log.warning("%d labels are not classes (e.g. %r); those images are left out of the accuracy",
                            len(bad), bad[0])
            unlabelled = sum(1 for p in paths if p not in labels)
            if unlabelled:
                log.warning("%d images have no label; they are left out of the accuracy", unlabelled)
        k = min(self.opts.top_k, len(self.classes))
        done = 0
        for sl, probs in self.predict_features(feats):
            tops = {}
            for name, p in probs.items():
                self.evaluation.update(name, p, y[sl])
                idx = np.argsort(-p, axis=1, kind="stable")[:, :k]
                tops[name] = (idx, np.take_along_axis(p, idx, 1))
            for j, i in enumerate(range(sl.start, sl.stop)):
                yield Prediction(paths[i], labels.get(paths[i]),
                                 {n: [(self.classes[c], float(q)) for c, q in zip(ix[j], pr[j])]
                                  for n, (ix, pr) in tops.items()})
            done = sl.stop
            if self.on_progress is not None:
                self.on_progress("classify", done, len(paths))
        self.elapsed = time.monotonic() - t0
        self.images_per_s = len(paths) / self.elapsed if self.elapsed > 0 else 0.0


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
