"""Model specs: one place that parses how a user names a CLIP model, and one factory that builds it.

Spec forms (``parse_model_spec``):

- ``ARCH:TAG``            an open_clip architecture with a pretrained tag, e.g. ``ViT-B-32:laion2b_s34b_b79k``
- ``ARCH:/path/ckpt.pt``  an architecture with a local checkpoint file (.pt, .pth, .bin, .safetensors)
- ``hf-hub:ORG/NAME``     an open_clip model on the Hugging Face hub (config and weights)
- ``/path/to/dir``        a local folder holding ``open_clip_config.json`` and weights (``local-dir:`` also accepted)
- ``longclip:LongCLIP-B`` a released Long-CLIP checkpoint, or ``longclip:ARCH:/path/longclip.pt`` (retrieval.models.longclip)
- ``random:ARCH``         any open_clip architecture with deterministic random weights (seed 0): for benchmarks
- ``clipdex-tiny``        a tiny registered open_clip config with deterministic random weights (seed 0):
                          meaningless for real search, used by tests and offline demos.

Weights come through the normal open_clip / Hugging Face caches. The cache is looked at first, so a cached model
loads without touching the network; a model that is not cached is downloaded when the hub can be reached, and
otherwise ``WeightsUnavailable`` says how to get it.
"""
from __future__ import annotations

import contextlib
import difflib
import logging
import os
import pickle
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from retrieval.errors import UnknownModel, WeightsUnavailable

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-B-32:laion2b_s34b_b79k"
TINY_MODEL = "clipdex-tiny"
TINY_SEED = 0
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
_CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec. ``kind`` is one of: pretrained, checkpoint, hf-hub, local-dir, registered, longclip."""

    kind: str
    arch: str | None = None
    source: str | None = None  # pretrained tag, checkpoint path, hub id or folder

    def __str__(self) -> str:
        if self.kind == "registered":
            return self.arch or ""
        if self.kind == "random":
            return f"random:{self.arch}"
        if self.kind == "hf-hub":
            return f"hf-hub:{self.source}"
        if self.kind == "local-dir":
            return str(self.source)
        if self.kind == "longclip":
            from retrieval.models.longclip import longclip_spec_str

            return longclip_spec_str(self)
        return f"{self.arch}:{self.source}"


def register_configs() -> None:
    """Register clipdex's own open_clip configs (``clipdex-tiny``) the way open_clip registers its own."""
    import open_clip

    if TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)


def parse_model_spec(spec: str | ModelSpec | None) -> ModelSpec:
    """Parse a user's model spec; raise ``UnknownModel`` with the right spelling when it names nothing known."""
    if isinstance(spec, ModelSpec):
        return spec
    spec = (spec or DEFAULT_MODEL).strip()
    import open_clip

    register_configs()
    if spec.startswith("longclip:"):
        from retrieval.models.longclip import parse_longclip_spec

        return parse_longclip_spec(spec)
    if spec.startswith("random:"):
        arch = spec[len("random:"):]
        if arch not in open_clip.list_models():
            raise UnknownModel(f"unknown architecture {arch!r} in {spec!r}; see open_clip.list_models()")
        return ModelSpec("random", arch=arch)
    if spec.startswith("hf-hub:"):
        if spec.count("/") < 1 or not spec[len("hf-hub:"):].strip("/"):
            raise UnknownModel(f"bad hub spec {spec!r}: expected hf-hub:ORG/NAME")
        return ModelSpec("hf-hub", source=spec[len("hf-hub:"):].strip("/"))
    if spec.startswith("local-dir:"):
        spec = spec[len("local-dir:"):]
    if os.path.isdir(spec):
        folder = Path(spec).expanduser().resolve()
        if not (folder / "open_clip_config.json").is_file():
            raise UnknownModel(f"model folder {folder} has no open_clip_config.json")
        return ModelSpec("local-dir", source=str(folder))
    if spec in ("clipdex-tiny",) or (":" not in spec and spec in open_clip.list_models()):
        if spec == TINY_MODEL:
            return ModelSpec("registered", arch=spec)
        tags = open_clip.list_pretrained_tags_by_model(spec)
        hint = f"; pretrained tags: {', '.join(tags[:6])}" if tags else ""
        raise UnknownModel(f"model {spec!r} needs weights: write ARCH:TAG or ARCH:/path/to/checkpoint{hint}")
    arch, sep, source = spec.partition(":")
    if not sep:
        raise UnknownModel(_unknown_message(spec))
    if arch not in open_clip.list_models():
        raise UnknownModel(_unknown_message(spec))
    if source.lower().endswith(CHECKPOINT_SUFFIXES) or os.path.sep in source:
        path = Path(source).expanduser()
        if not path.is_file():
            raise UnknownModel(f"checkpoint file not found: {path}")
        return ModelSpec("checkpoint", arch=arch, source=str(path.resolve()))
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if source not in tags:
        close = difflib.get_close_matches(source, tags, n=3)
        hint = f"did you mean {', '.join(arch + ':' + t for t in close)}?" if close else f"tags: {', '.join(tags)}"
        raise UnknownModel(f"unknown pretrained tag {source!r} for {arch}; {hint}")
    return ModelSpec("pretrained", arch=arch, source=source)


def _unknown_message(spec: str) -> str:
    import open_clip

    names = [f"{a}:{t}" for a, t in open_clip.list_pretrained()] + [TINY_MODEL]
    close = difflib.get_close_matches(spec, names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see `clipdex models`"
    return f"unknown model {spec!r}: expected ARCH:TAG, ARCH:/path/ckpt.pt, hf-hub:ORG/NAME, a model folder or {TINY_MODEL}; {hint}"


# ---------------------------------------------------------------------------------------------------------------
# Weights: cache first, then the network, else a clear error.

_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _hub_cached_file(repo_id: str, filenames) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        try:
            hit = try_to_load_from_cache(repo_id, name)
        except Exception:  # malformed repo ids and the like: treat as not cached
            hit = None
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


def _hub_repo_and_files(pretrained_cfg: dict) -> tuple[str, tuple[str, ...]]:
    hub = pretrained_cfg.get("hf_hub", "").strip("/")
    parts = hub.split("/")
    if len(parts) > 2:  # "org/repo/filename"
        return "/".join(parts[:2]), ("/".join(parts[2:]),)
    return hub, _WEIGHT_FILES


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    parsed = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _unavailable(spec: ModelSpec, what: str) -> WeightsUnavailable:
    return WeightsUnavailable(
        f"weights for {spec} are not in the local cache and {what}: download them on a connected machine "
        f"(python -c \"import open_clip; open_clip.create_model('{spec.arch or spec}', pretrained='{spec.source}')\") "
        "and copy the Hugging Face cache here (or point HF_HOME at it), or pass a local checkpoint as ARCH:/path/to/ckpt"
    )


def cached_weights(spec: ModelSpec) -> str | None:
    """Path of the cached weights for a pretrained or hub spec, or None when they are not cached."""
    import open_clip

    if spec.kind == "pretrained":
        cfg = open_clip.get_pretrained_cfg(spec.arch, spec.source)
        if cfg.get("hf_hub"):
            repo, files = _hub_repo_and_files(cfg)
            return _hub_cached_file(repo, files)
        url = cfg.get("url", "")
        target = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url)) if url else ""
        return target if target and os.path.isfile(target) else None
    if spec.kind == "hf-hub":
        config = _hub_cached_file(spec.source, ("open_clip_config.json",))
        weights = _hub_cached_file(spec.source, _WEIGHT_FILES)
        return weights if config and weights else None
    return None


def _fetch(spec: ModelSpec) -> str:
    """Download the weights (or hub snapshot) of a spec that is not cached; return a local path."""
    import open_clip

    if not _hub_reachable():
        raise _unavailable(spec, "the Hugging Face hub cannot be reached (offline)")
    try:
        if spec.kind == "pretrained":
            cfg = open_clip.get_pretrained_cfg(spec.arch, spec.source)
            path = open_clip.download_pretrained(cfg)
        else:
            from huggingface_hub import snapshot_download

            path = snapshot_download(spec.source, allow_patterns=["open_clip_config.json", *_WEIGHT_FILES])
    except Exception as exc:  # network errors of every library in the chain
        raise _unavailable(spec, f"the download failed ({str(exc).splitlines()[0][:160]})") from exc
    if not path:
        raise _unavailable(spec, "open_clip knows no download location for them")
    return path


# ---------------------------------------------------------------------------------------------------------------
# The factory.

def create_model(spec: ModelSpec, device: str = "cpu"):
    """Build ``(model, preprocess, tokenizer)`` for a parsed spec, in eval mode on ``device``.

    Raises ``WeightsUnavailable`` when pretrained weights are neither cached nor downloadable.
    """
    import open_clip
    import torch

    register_configs()
    if spec.kind == "longclip":
        from retrieval.models.longclip import create_longclip_model

        return create_longclip_model(spec, device)
    if spec.kind in ("registered", "random"):
        with torch.random.fork_rng(devices=[]), _quiet_root_warning():
            torch.manual_seed(TINY_SEED)
            model, _, preprocess = open_clip.create_model_and_transforms(spec.arch, pretrained=None, device="cpu")
        tokenizer = open_clip.get_tokenizer(spec.arch)
    elif spec.kind in ("pretrained", "checkpoint"):
        kwargs = {}
        if spec.kind == "pretrained":
            cfg = open_clip.get_pretrained_cfg(spec.arch, spec.source)
            path = cached_weights(spec) or _fetch(spec)
            kwargs = {"force_quick_gelu": bool(cfg.get("quick_gelu", False))}
            for key, arg in (("mean", "image_mean"), ("std", "image_std"),
                             ("interpolation", "image_interpolation"), ("resize_mode", "image_resize_mode")):
                if cfg.get(key) is not None:
                    kwargs[arg] = cfg[key]
        else:
            path = spec.source
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.arch, pretrained=path, device="cpu", weights_only=True, **kwargs)
        except (RuntimeError, ValueError, OSError, KeyError, pickle.UnpicklingError) as exc:
            raise UnknownModel(f"cannot load checkpoint {path} into {spec.arch}: {str(exc).splitlines()[0][:200]}") from exc
        tokenizer = open_clip.get_tokenizer(spec.arch)
    else:  # hf-hub, local-dir
        if spec.kind == "hf-hub":
            weights = cached_weights(spec) or _fetch(spec)
            folder = str(Path(weights).parent) if os.path.isfile(weights) else weights
        else:
            folder = spec.source
        model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + folder, device="cpu")
        tokenizer = open_clip.get_tokenizer("local-dir:" + folder)
    model = model.to(device).eval()
    return model, preprocess, tokenizer


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _quiet_root_warning():
    """open_clip warns on the root logger that a weightless model is random: for clipdex-tiny that is the point."""
    root = logging.getLogger()
    flt = _DropRandomInitWarning()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def list_known_models(all_tags: bool = False) -> list[dict]:
    """Models clipdex can load: the tiny model, the default and (with ``all_tags``) every pretrained tag,
    each with whether its weights are in the local cache."""
    import open_clip

    register_configs()
    rows = [{"spec": TINY_MODEL, "cached": True, "note": "random weights, for tests and offline demos"}]
    pairs = open_clip.list_pretrained() if all_tags else [tuple(DEFAULT_MODEL.split(":"))]
    for arch, tag in pairs:
        spec = ModelSpec("pretrained", arch=arch, source=tag)
        try:
            cached = cached_weights(spec) is not None
        except Exception:
            cached = False
        rows.append({"spec": str(spec), "cached": cached, "note": "default" if str(spec) == DEFAULT_MODEL else ""})
    if not all_tags:  # also show any other cached pretrained tags
        for arch, tag in open_clip.list_pretrained():
            spec = ModelSpec("pretrained", arch=arch, source=tag)
            if str(spec) != DEFAULT_MODEL and _quiet_cached(spec):
                rows.append({"spec": str(spec), "cached": True, "note": ""})
    return rows


def _quiet_cached(spec: ModelSpec) -> bool:
    try:
        return cached_weights(spec) is not None
    except Exception:
        return False
