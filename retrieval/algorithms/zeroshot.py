"""Zero-shot text classifier ``W`` (D, C) and zero-shot logits ``100 · f W``.

Follows CLIP's prompt ensembling (Radford et al., 2021, "Learning Transferable Visual Models From Natural Language
Supervision", sec. 3.1.4; open_clip ``zero_shot_classifier.build_zero_shot_classifier``): for each class, format
every template with the class name (underscores -> spaces), encode, L2-normalise each prompt embedding, average,
L2-normalise again. Per-class descriptions (CuPL, Pratt et al., ICCV 2023) are appended to that class's prompts,
which with the 7-template set gives SuS-X's "CuPL+e" variant (Udandarao et al., ICCV 2023, vishaal27/SuS-X).

Template sets: ``openai80`` and ``simple7`` ship with open_clip (``open_clip.zero_shot_metadata``), imported lazily.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from retrieval.algorithms.arrays import as_f32, l2_normalize

log = logging.getLogger(__name__)

SINGLE_TEMPLATE = "a photo of a {}."
TEMPLATE_SET_NAMES = ("openai80", "simple7", "single")


def _template_to_str(t) -> str:
    """open_clip ships templates as ``lambda c: f"a photo of a {c}."``; turn them into ``"a photo of a {}."``."""
    if callable(t):
        t = t("{}")
    if not isinstance(t, str) or "{}" not in t:
        raise ValueError(f"template must contain '{{}}' for the class name, got {t!r}")
    return t


def get_templates(name: str) -> list[str]:
    """Return a named template set as a list of strings with ``{}`` for the class name.

    ``openai80``: CLIP's 80 ImageNet templates (``open_clip.zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES``);
    ``simple7``: the 7-template ensemble (``SIMPLE_IMAGENET_TEMPLATES``); ``single``: ``["a photo of a {}."]``.
    """
    if name == "single":
        return [SINGLE_TEMPLATE]
    if name not in TEMPLATE_SET_NAMES:
        raise ValueError(f"unknown template set {name!r}; choose one of {', '.join(TEMPLATE_SET_NAMES)}")
    try:
        from open_clip import zero_shot_metadata as meta  # heavy (imports torch): only the named template sets
    except ImportError as e:  # pragma: no cover - open_clip is a core dependency
        raise ImportError("template sets 'openai80'/'simple7' need open_clip_torch "
                          "(pip install open_clip_torch)") from e
    src = meta.OPENAI_IMAGENET_TEMPLATES if name == "openai80" else meta.SIMPLE_IMAGENET_TEMPLATES
    return [_template_to_str(t) for t in src]


class _TemplateSets(Mapping):
    """Lazy read-only mapping ``name -> list[str]`` over :func:`get_templates` (open_clip imported on access)."""

    def __getitem__(self, name: str) -> list[str]:
        if name not in TEMPLATE_SET_NAMES:
            raise KeyError(name)
        return get_templates(name)

    def __iter__(self):
        return iter(TEMPLATE_SET_NAMES)

    def __len__(self) -> int:
        return len(TEMPLATE_SET_NAMES)


TEMPLATE_SETS: Mapping[str, list[str]] = _TemplateSets()


def load_templates(path: str | Path) -> list[str]:
    """Read a template file: one template per line, ``{}`` marks the class name.

    Blank lines and lines starting with ``#`` are skipped. A line without ``{}`` raises ``ValueError`` naming the
    file and line number.
    """
    out: list[str] = []
    for lineno, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "{}" not in line:
            raise ValueError(f"{path}:{lineno}: template lacks '{{}}' for the class name: {line!r}")
        out.append(line)
    if not out:
        raise ValueError(f"{path}: no templates found")
    return out


def load_descriptions(path: str | Path) -> dict[str, list[str]]:
    """Read a CuPL-style descriptions JSON ``{class name: [sentence, ...]}`` (a bare string is one sentence)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: descriptions must be a JSON object {{class: [sentences]}}")
    out: dict[str, list[str]] = {}
    for k, v in data.items():
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
            raise ValueError(f"{path}: descriptions for {k!r} must be a list of strings")
        out[str(k)] = [s.strip() for s in v if s.strip()]
    return out


def class_prompts(classname: str, templates: Sequence,
                  descriptions: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """All prompts of one class: templates formatted with the cleaned name, then its descriptions (if any).

    Descriptions are looked up by the class name as given, then by its underscore-free form.
    """
    name = classname.replace("_", " ")
    prompts = [_template_to_str(t).replace("{}", name) for t in templates]
    if descriptions:
        extra = descriptions.get(classname)
        if extra is None:
            extra = descriptions.get(name, [])
        prompts.extend(extra)
    return prompts


def build_text_classifier(
    classnames: Sequence[str],
    templates: Sequence,
    encode_texts: Callable[[list[str]], np.ndarray],
    descriptions: Mapping[str, Sequence[str]] | None = None,
    *,
    batch_size: int = 1024,
) -> np.ndarray:
    """Text classifier ``W`` (D, C).

    For class c with prompts p_1..p_P (templates formatted with the name, plus ``descriptions[c]``):
    ``W[:, c] = norm( (1/P) Σ_i norm(E_text(p_i)) )``. ``encode_texts(list[str]) -> (n, D)``; prompts of several
    classes are batched together (``batch_size`` prompts per call). Returns float32 (D, C).
    """
    if len(classnames) == 0:
        raise ValueError("classnames is empty")
    if len(templates) == 0 and not descriptions:
        raise ValueError("no templates and no descriptions: nothing to encode")
    per_class = [class_prompts(c, templates, descriptions) for c in classnames]
    for c, ps in zip(classnames, per_class):
        if not ps:
            raise ValueError(f"class {c!r} has no prompts")
    flat = [p for ps in per_class for p in ps]
    chunks = []
    for start in range(0, len(flat), batch_size):
        emb = as_f32(encode_texts(flat[start : start + batch_size]), "encode_texts output", ndim=2)
        chunks.append(l2_normalize(emb))
    emb = np.concatenate(chunks, axis=0)
    if emb.shape[0] != len(flat):
        raise ValueError(f"encode_texts returned {emb.shape[0]} rows for {len(flat)} prompts")
    bounds = np.cumsum([0] + [len(ps) for ps in per_class])
    cols = [emb[bounds[i] : bounds[i + 1]].mean(axis=0) for i in range(len(classnames))]
    w = l2_normalize(np.stack(cols, axis=0)).T  # (D, C)
    log.debug("built text classifier: %d classes, %d prompts, dim %d", len(classnames), len(flat), w.shape[0])
    return np.ascontiguousarray(w, dtype=np.float32)


CLIP_LOGIT_SCALE = 100.0  # exp(logit_scale) of the OpenAI CLIP models (learned, clamped at 100 in training)


def zeroshot_logits(feats, clip_weights) -> np.ndarray:
    """Zero-shot logits ``100 · f W``: feats (N, D) unit rows, clip_weights ``W`` (D, C) -> (N, C) float32."""
    f = as_f32(feats, "feats", ndim=2)
    w = as_f32(clip_weights, "clip_weights", ndim=2)
    if f.shape[1] != w.shape[0]:
        raise ValueError(f"feats dim {f.shape[1]} != clip_weights dim {w.shape[0]}")
    return (CLIP_LOGIT_SCALE * f @ w).astype(np.float32)
