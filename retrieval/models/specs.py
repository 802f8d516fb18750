"""Model specs: the one place that parses how a user names a CLIP model.

Spec forms (``parse_model_spec``):

- ``ARCH:TAG``            an open_clip architecture with a pretrained tag, e.g. ``ViT-B-32:laion2b_s34b_b79k``
- ``ARCH:/path/ckpt.pt``  an architecture with a local checkpoint file (.pt, .pth, .bin, .safetensors)
- ``hf-hub:ORG/NAME``     an open_clip model on the Hugging Face hub (config and weights)
- ``/path/to/dir``        a local folder holding ``open_clip_config.json`` and weights (``local-dir:`` also accepted)
- ``longclip:LongCLIP-B`` a released Long-CLIP checkpoint (``RELEASED_LONGCLIP``),
                          or ``longclip:ARCH:/path/longclip.pt``
- ``random:ARCH``         any open_clip architecture with deterministic random weights (seed 0): for benchmarks
- ``clipdex-tiny``        a tiny registered open_clip config with weights shipped in the package
                          (``TINY_WEIGHTS``, loaded as ``ARCH:/path/ckpt.safetensors`` is): trained on generated
                          drawings (``benchmarks/train_tiny.py``), it knows shapes, colours, sizes and positions of
                          drawn objects and nothing of the real world; used by tests and the offline demo.
                          ``random:clipdex-tiny`` is the same architecture with random weights (benchmarks).
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from retrieval.errors import UnknownModel

DEFAULT_MODEL = "ViT-B-32:laion2b_s34b_b79k"
TINY_MODEL = "clipdex-tiny"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
LONGCLIP_PREFIX = "longclip:"
# released Long-CLIP name -> (open_clip architecture, hub repo, file)
RELEASED_LONGCLIP = {
    "LongCLIP-B": ("ViT-B-16-quickgelu", "BeichenZhang/LongCLIP-B", "longclip-B.pt"),
    "LongCLIP-L": ("ViT-L-14-quickgelu", "BeichenZhang/LongCLIP-L", "longclip-L.pt"),
}
_CONFIG_DIR = Path(__file__).parent / "configs"
TINY_WEIGHTS = Path(__file__).parent / "weights" / "clipdex-tiny.safetensors"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec. ``kind`` is one of: pretrained, checkpoint, hf-hub, local-dir, registered, random,
    longclip."""

    kind: str
    arch: str | None = None
    source: str | None = None  # pretrained tag, checkpoint path, hub id, folder or released Long-CLIP name

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
            released = self.source in RELEASED_LONGCLIP
            return f"{LONGCLIP_PREFIX}{self.source}" if released else f"{LONGCLIP_PREFIX}{self.arch}:{self.source}"
        return f"{self.arch}:{self.source}"


def register_configs() -> None:
    """Register clipdex's own open_clip configs (``clipdex-tiny``) the way open_clip registers its own."""
    import open_clip  # heavy (torch): only when a spec is parsed or a model built

    if TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)


def parse_model_spec(spec: str | ModelSpec | None) -> ModelSpec:
    """Parse a user's model spec; raise ``UnknownModel`` with the right spelling when it names nothing known."""
    if isinstance(spec, ModelSpec):
        return spec
    spec = (spec or DEFAULT_MODEL).strip()
    import open_clip  # heavy (torch): only when a spec is parsed

    register_configs()
    if spec.startswith(LONGCLIP_PREFIX):
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
    if spec == TINY_MODEL:
        return ModelSpec("registered", arch=spec)
    if ":" not in spec and spec in open_clip.list_models():
        tags = open_clip.list_pretrained_tags_by_model(spec)
        hint = f"; pretrained tags: {', '.join(tags[:6])}" if tags else ""
        raise UnknownModel(f"model {spec!r} needs weights: write ARCH:TAG or ARCH:/path/to/checkpoint{hint}")
    arch, sep, source = spec.partition(":")
    if not sep or arch not in open_clip.list_models():
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


def parse_longclip_spec(spec: str) -> ModelSpec:
    """``longclip:NAME`` or ``longclip:ARCH:/path/ckpt.pt`` -> ``ModelSpec("longclip", arch, source)``."""
    import open_clip  # heavy (torch): only when a spec is parsed

    rest = spec[len(LONGCLIP_PREFIX):].strip()
    if rest in RELEASED_LONGCLIP:
        return ModelSpec("longclip", arch=RELEASED_LONGCLIP[rest][0], source=rest)
    arch, sep, path = rest.partition(":")
    if not sep or not path:
        raise UnknownModel(f"bad Long-CLIP spec {spec!r}: expected "
                           f"{', '.join(LONGCLIP_PREFIX + n for n in RELEASED_LONGCLIP)} "
                           f"or {LONGCLIP_PREFIX}ARCH:/path/to/longclip.pt")
    register_configs()
    if arch not in open_clip.list_models():
        raise UnknownModel(f"unknown architecture {arch!r} in {spec!r} (LongCLIP-B is ViT-B-16-quickgelu, "
                           "LongCLIP-L is ViT-L-14-quickgelu)")
    file = Path(path).expanduser()
    if not file.is_file():
        raise UnknownModel(f"Long-CLIP checkpoint file not found: {file}")
    return ModelSpec("longclip", arch=arch, source=str(file.resolve()))


def _unknown_message(spec: str) -> str:
    import open_clip  # heavy (torch): only when a spec is parsed

    names = [f"{a}:{t}" for a, t in open_clip.list_pretrained()] + [TINY_MODEL]
    close = difflib.get_close_matches(spec, names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see `clipdex models`"
    return (f"unknown model {spec!r}: expected ARCH:TAG, ARCH:/path/ckpt.pt, hf-hub:ORG/NAME, a model folder or "
            f"{TINY_MODEL}; {hint}")
