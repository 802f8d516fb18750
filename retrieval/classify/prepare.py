"""What the classification methods need, prepared once per run and shared: the options, the text classifier W,
the validation split, the support index, the shots; and one builder per method that turns them into its
:class:`~retrieval.classify.methods.Runner` (the registry in ``retrieval.classify.registry`` names them).

Everything is computed on first use, so a run that asks for zero-shot alone never opens a support index or
encodes a shot.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from retrieval import algorithms  # RECO's names (torch) load on first use, through the package
from retrieval.algorithms.arrays import one_hot
from retrieval.algorithms.gda import gda_fit, gda_search_alpha
from retrieval.algorithms.proker import DEFAULT_BETA as PROKER_BETA
from retrieval.algorithms.proker import DEFAULT_LAMBDA as PROKER_LAMBDA
from retrieval.algorithms.tip_adapter import DEFAULT_ALPHA, DEFAULT_BETA, build_cache, tip_adapter_search
from retrieval.algorithms.tipx import DEFAULT_TIPX, tipx_search
from retrieval.algorithms.xmore import DEFAULT_RERANK as XMORE_RERANK
from retrieval.algorithms.zeroshot import (
    TEMPLATE_SET_NAMES,
    build_text_classifier,
    get_templates,
    load_descriptions,
    load_templates,
)
from retrieval.classify import methods as M
from retrieval.classify.inputs import encode_images, encode_views, load_labelled
from retrieval.classify.support import captioned_count, image_to_texts, open_support, sus_lc_support, text_to_images
from retrieval.errors import InvalidInput
from retrieval.index.directory import Index
from retrieval.io.workers import Progress

log = logging.getLogger(__name__)

SUSX_QUERY = "A photo of a {}."
GDA_ALPHA = 10.0  # no paper default (the paper searches); chosen on clipdex/synthetic/embeddings.py — use --tune
# --tune: every grid holds its zero-shot end (augmentation weight 0), and the weakest augmentation within one
# standard error of the best tuning accuracy is kept (the one-standard-error rule): a tuning split of a few hundred
# images cannot tell apart settings a point apart, and the papers' "best on validation" then overfits it
TUNE_RULE = "1se"


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
    xmore_rerank: bool = XMORE_RERANK  # re-sort the captions by the classifier's image-caption score
    reco_k: int = 10
    reco_weight: float = 1.0
    n_views: int = 10
    memory_budget: int = 256 << 20
    use_cache: bool = True


class MethodInputs:
    """The inputs of one run, each computed once on first use. ``skip(method, why)`` is how a builder says it
    cannot run: a warning under ``all``, an ``InvalidInput`` when the method was asked for by name."""

    def __init__(self, classes: list[str], opts: ClassifyOptions, encoder, explicit: Sequence[str],
                 on_progress: Callable[[Progress], None] | None = None):
        self.classes, self.opts, self.encoder, self.explicit = classes, opts, encoder, set(explicit)
        self.on_progress = on_progress
        self.notes: list[str] = []
        self._W = self._val = self._shots = self.ix = None
        self.descriptions = None

    def close(self) -> None:
        if self.ix is not None:
            self.ix.close()
            self.ix = None

    def skip(self, method: str, why: str) -> None:
        if method in self.explicit:
            raise InvalidInput(why)
        log.warning("skipping %s: %s", method, why)

    @property
    def W(self) -> np.ndarray:
        """The zero-shot text classifier (D, C): prompt templates (and descriptions) per class, encoded."""
        if self._W is None:
            o = self.opts
            try:
                templates = (get_templates(o.templates) if o.templates in TEMPLATE_SET_NAMES
                             else load_templates(o.templates))
                self.descriptions = load_descriptions(o.descriptions) if o.descriptions else None
            except FileNotFoundError as exc:
                raise InvalidInput(f"file not found: {exc.filename}") from None
            except (ValueError, OSError) as exc:
                raise InvalidInput(str(exc).splitlines()[0]) from None
            if self.descriptions:
                lost = [c for c in self.descriptions
                        if c not in self.classes and c.replace("_", " ") not in self.classes]
                if lost:
                    log.warning("descriptions of %d names that are not classes are ignored (e.g. %r)", len(lost),
                                lost[0])
            # CuPL-style descriptions can pass the 77-token context: pool them rather than truncate
            encode = lambda texts: self.encoder.encode_long_texts(texts).vectors  # noqa: E731
            self._W = build_text_classifier(self.classes, templates, encode, self.descriptions)
        return self._W

    @property
    def val(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The ``tune`` split as (features (n, D), labels (n,)), or None without one."""
        if self._val is None and self.opts.tune:
            split = load_labelled(self.opts.tune, self.classes, "--tune")
            feats, errors = encode_images(self.encoder, split.paths, self.opts.batch_size, self.opts.workers)
            if errors:
                raise InvalidInput(f"--tune: cannot read {errors[0][0]}: {errors[0][1]}")
            self._val = (feats, split.labels)
        return self._val

    def support(self) -> Index:
        if self.ix is None:
            self.ix = open_support(self.opts.support, self.encoder)
        return self.ix

    def shots(self):
        """The shots as (split, views (n, V, D))."""
        if self._shots is None:
            split = load_labelled(self.opts.shots, self.classes, "shots")
            if split.missing_classes:
                log.warning("shots: no images for %d classes (e.g. %r); they rely on the zero-shot classifier",
                            len(split.missing_classes), split.missing_classes[0])
            self._shots = (split, encode_views(self.encoder, split.paths, self.opts.n_views))
        return self._shots

    def tipx_params(self, keys: np.ndarray, labels_1hot: np.ndarray) -> tuple[dict, np.ndarray | None, float | None]:
        """TIP-X's (alpha, beta, gamma), reference affinity range and validation accuracy: searched on ``tune``
        when given, else the defaults (None, None)."""
        if self.val is None or not len(keys):
            return dict(DEFAULT_TIPX), None, None
        vf, vl = self.val
        hp = tipx_search(vf, vl, keys, labels_1hot, self.W, rule=TUNE_RULE, with_zero=True)
        aff = vf @ keys.T
        ref = np.array([aff.min(), aff.max()], np.float32)
        return {k: hp[k] for k in ("alpha", "beta", "gamma")}, ref, hp["acc"]


# -- one builder per method: MethodInputs -> Runner, or None when skipped --------------------------------------

def build_zeroshot(inp: MethodInputs) -> M.Runner:
    return M.ZeroShot(inp.W)


def build_susx(inp: MethodInputs) -> M.Runner:
    o, ix, W = inp.opts, inp.support(), inp.W
    d = inp.descriptions
    queries = [(d and (d.get(c) or d.get(c.replace("_", " ")))) or [SUSX_QUERY.format(c.replace("_", " "))]
               for c in inp.classes]
    s = sus_lc_support(ix, inp.encoder, inp.classes, queries, o.per_class, o.dedup_ip, o.use_cache)
    where = f"from cache {s.cache_path}" if s.from_cache else (
        f"retrieved from {o.support}" + (f", cached in {s.cache_path}" if s.cache_path else ""))
    inp.notes.append(f"susx: support set of {len(s.ids)} images ({o.per_class} per class asked), {where}")
    if s.short:
        c, n = s.short[0]
        log.warning("susx: %d classes got fewer than %d support images (e.g. %r: %d); the index holds only "
                    "%d images", len(s.short), o.per_class, c, n, ix.store.count("images"))
    params, ref, acc = inp.tipx_params(s.feats, one_hot(s.labels, len(inp.classes)))
    if acc is not None:
        inp.notes.append(f"susx: TIP-X searched on {o.tune} (val accuracy {100 * acc:.1f}%)")
    return M.TipX("susx", W, s.feats, s.labels, params, ref)


def _captioned(inp: MethodInputs, method: str, want: int, what: str) -> int | None:
    """How many captioned images the support index holds (warning below ``want``); None when it has none."""
    n = captioned_count(inp.support())
    if n == 0:
        inp.skip(method, f"{method} needs captions, but support index {inp.opts.support} has none; index an "
                         f"image-caption manifest (path, caption columns)")
        return None
    if n < want:
        log.warning("%s: the support index holds %d captioned images, fewer than %s = %d", method, n, what, want)
    return n


def build_xmore(inp: MethodInputs, stream: bool = False) -> M.Runner | None:
    o = inp.opts
    n = _captioned(inp, "xmore-stream" if stream else "xmore", o.xmore_k, "K")
    if n is None:
        return None
    return M.XMoRe(inp.support(), inp.W, o.xmore_k, min(o.xmore_retrieve, n) or 1, stream=stream,
                   scale=getattr(inp.encoder, "logit_scale", M.CLIP_LOGIT_SCALE), rerank=o.xmore_rerank)


def build_xmore_stream(inp: MethodInputs) -> M.Runner | None:
    return build_xmore(inp, stream=True)


def build_reco(inp: MethodInputs) -> M.Runner | None:
    o = inp.opts
    n = _captioned(inp, "reco", o.reco_k, "k")
    if n is None:
        return None
    ix = inp.support()
    fusers = load_fusers(o.fuser, ix.model) if o.fuser else None
    k, weight = min(o.reco_k, n), o.reco_weight
    if fusers is None and inp.val is not None:  # the mean-fusion weight, searched like the other methods' values
        vf, vl = inp.val
        T = np.ascontiguousarray(inp.W.T)
        weight, acc = algorithms.reco_search_weight(vf, vl, image_to_texts(ix, vf, k), T, text_to_images(ix, T, k),
                                                    rule=TUNE_RULE)
        inp.notes.append(f"reco: mean-fusion weight {weight:g} searched on {o.tune} (val accuracy {100 * acc:.1f}%)")
    runner = M.Reco(ix, inp.W, k, weight, fusers)
    if fusers is not None and inp.val is not None:  # how much of the trained fuser's scores to use: 0 = zero-shot
        vf, vl = inp.val
        runner.blend, acc = algorithms.reco_search_blend(*runner.cosines(vf), vl, rule=TUNE_RULE)
        runner.params["blend"] = runner.blend
        inp.notes.append(f"reco: trained-fuser blend {runner.blend:g} searched on {o.tune} "
                         f"(val accuracy {100 * acc:.1f}%)")
    return runner


def load_fusers(path: str, model: str):
    """The (image, text) RECO fusers saved by ``clipdex train-reco``; refused for another model, and refused when
    the file holds anything but tensors and plain values (``weights_only`` loading: a checkpoint cannot run code)."""
    state = algorithms.load_reco_checkpoint(path)
    if state.get("model") not in (None, model):
        raise InvalidInput(f"RECO fuser {path} was trained on {state['model']} embeddings, not {model}")
    return algorithms.fusers_from_checkpoint(state, path)


def _cache(inp: MethodInputs):
    split, views = inp.shots()
    keys, values = build_cache(views, split.labels, len(inp.classes))  # Tip-Adapter keys: mean of the views
    return split, views, keys, values


def build_tip(inp: MethodInputs) -> M.Runner:
    _, _, keys, values = _cache(inp)
    a, b = DEFAULT_ALPHA, DEFAULT_BETA
    if inp.val is not None:
        a, b, _ = tip_adapter_search(*inp.val, keys, values, inp.W, rule=TUNE_RULE, with_zero=True)
    return M.TipAdapter(inp.W, keys, values, a, b)


def build_tipx(inp: MethodInputs) -> M.Runner:
    split, _, keys, values = _cache(inp)
    params, ref, _ = inp.tipx_params(keys, values)
    return M.TipX("tipx", inp.W, keys, split.labels, params, ref)


def build_gda(inp: MethodInputs) -> M.Runner | None:
    split, views = inp.shots()
    if split.missing_classes:
        inp.skip("gda", f"gda needs shots of every class; none for {split.missing_classes[0]!r}")
        return None
    x, y = M.gda_samples(views, split.labels)
    Wg, b = gda_fit(x, y, len(inp.classes))
    alpha = gda_search_alpha(*inp.val, inp.W, Wg, b, rule=TUNE_RULE)[0] if inp.val is not None else GDA_ALPHA
    return M.GDA(inp.W, Wg, b, alpha)


def build_proker(inp: MethodInputs) -> M.Runner:
    split, _, keys, _ = _cache(inp)
    return M.ProKeR(inp.W, keys, split.labels, PROKER_BETA, PROKER_LAMBDA)
