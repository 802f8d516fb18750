"""The model factory: ``create_model(spec)`` builds ``(model, preprocess, tokenizer)`` for a parsed spec.

Specs are parsed in ``retrieval.models.specs`` (re-exported here: ``parse_model_spec``, ``ModelSpec``,
``DEFAULT_MODEL``, ``TINY_MODEL``); weights come through ``retrieval.models.hub`` (the normal open_clip / Hugging
Face caches first, so a cached model loads without touching the network; a model that is not cached is downloaded
when the hub can be reached, and otherwise ``WeightsUnavailable`` says how to get it); Long-CLIP checkpoints are
built by ``retrieval.models.longclip``.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

from retrieval.errors import UnknownModel, WeightsUnavailable
from retrieval.models.hub import cached_weights, fetch_weights, quiet_random_init
from retrieval.models.longclip import create_longclip_model
from retrieval.models.specs import (
    DEFAULT_MODEL,
    TINY_MODEL,
    TINY_WEIGHTS,
    ModelSpec,
    parse_model_spec,
    register_configs,
)

__all__ = ["DEFAULT_MODEL", "TINY_MODEL", "ModelSpec", "parse_model_spec", "cached_weights", "create_model",
           "list_known_models"]

TINY_SEED = 0


def create_model(spec: ModelSpec, device: str = "cpu"):
    """Build ``(model, preprocess, tokenizer)`` for a parsed spec, in eval mode on ``device``.

    Raises ``WeightsUnavailable`` when pretrained weights are neither cached nor downloadable.
    """
    import open_clip  # heavy (torch): only when a model is built
    import torch  # heavy: only when a model is built
    from safetensors import SafetensorError  # open_clip's dependency: a truncated or lying .safetensors file

    load_errors = (RuntimeError, ValueError, OSError, KeyError, EOFError, pickle.UnpicklingError, SafetensorError)

    register_configs()
    if spec.kind == "longclip":
        return create_longclip_model(spec, device)
    if spec.kind == "registered":  # clipdex-tiny: its config and the shipped weights, loaded as a user's checkpoint
        if not TINY_WEIGHTS.is_file():
            raise WeightsUnavailable(f"the shipped weights of {TINY_MODEL} are missing ({TINY_WEIGHTS}): reinstall "
                                     "clipdex, or rebuild them with python benchmarks/train_tiny.py")
        spec = ModelSpec("checkpoint", arch=spec.arch, source=str(TINY_WEIGHTS))
    if spec.kind == "random":
        with torch.random.fork_rng(devices=[]), quiet_random_init():
            torch.manual_seed(TINY_SEED)
            model, _, preprocess = open_clip.create_model_and_transforms(spec.arch, pretrained=None, device="cpu")
        tokenizer = open_clip.get_tokenizer(spec.arch)
    elif spec.kind in ("pretrained", "checkpoint"):
        kwargs = {}
        if spec.kind == "pretrained":
            cfg = open_clip.get_pretrained_cfg(spec.arch, spec.source)
            path = cached_weights(spec) or fetch_weights(spec)
            kwargs = {"force_quick_gelu": bool(cfg.get("quick_gelu", False))}
            for key, arg in (("mean", "image_mean"), ("std", "image_std"),
                             ("interpolation", "image_interpolation"), ("resize_mode", "image_resize_mode")):
                if cfg.get(key) is not None:
                    kwargs[arg] = cfg[key]
        else:
            path = spec.source
        try:
            with torch.random.fork_rng(devices=[]):  # the init before the weights arrive leaves the caller's RNG be
                model, _, preprocess = open_clip.create_model_and_transforms(
                    spec.arch, pretrained=path, device="cpu", weights_only=True, **kwargs)
        except load_errors as exc:
            raise UnknownModel(f"cannot load checkpoint {path} into {spec.arch}: {_first_line(exc)}") from exc
        tokenizer = open_clip.get_tokenizer(spec.arch)
    else:  # hf-hub, local-dir
        if spec.kind == "hf-hub":
            weights = cached_weights(spec) or fetch_weights(spec)
            folder = str(Path(weights).parent) if os.path.isfile(weights) else weights
        else:
            folder = spec.source
        try:
            model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + folder, device="cpu")
        except load_errors as exc:
            raise UnknownModel(f"cannot load the model in {folder}: {_first_line(exc)}") from exc
        tokenizer = open_clip.get_tokenizer("local-dir:" + folder)
    model = model.to(device).eval()
    return model, preprocess, tokenizer


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def list_known_models(all_tags: bool = False) -> list[dict]:
    """Models clipdex can load: the tiny model, the default and (with ``all_tags``) every pretrained tag,
    each with whether its weights are in the local cache."""
    import open_clip  # heavy (torch): only when models are listed

    register_configs()
    rows = [{"spec": TINY_MODEL, "cached": TINY_WEIGHTS.is_file(),
             "note": "shipped, trained on drawn shapes: knows shapes, colours, sizes, positions; nothing real"},
            {"spec": f"random:{TINY_MODEL}", "cached": True, "note": "the same, with random weights (benchmarks)"}]
    pairs = open_clip.list_pretrained() if all_tags else [tuple(DEFAULT_MODEL.split(":"))]
    for arch, tag in pairs:
        spec = ModelSpec("pretrained", arch=arch, source=tag)
        rows.append({"spec": str(spec), "cached": _quiet_cached(spec),
                     "note": "default" if str(spec) == DEFAULT_MODEL else ""})
    if not all_tags:  # also show any other cached pretrained tags
        for arch, tag in open_clip.list_pretrained():
            spec = ModelSpec("pretrained", arch=arch, source=tag)
            if str(spec) != DEFAULT_MODEL and _quiet_cached(spec):
                rows.append({"spec": str(spec), "cached": True, "note": ""})
    return rows


def _quiet_cached(spec: ModelSpec) -> bool:
    """Whether ``spec``'s weights are cached; a tag whose lookup fails counts as not cached."""
    try:
        return cached_weights(spec) is not None
    except Exception:
        return False
