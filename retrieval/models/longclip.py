"""Long-CLIP model specs: released checkpoints (LongCLIP-B/16, -L/14) and local Long-CLIP checkpoint files.

Spec forms (parsed here for ``retrieval.models.factory.parse_model_spec``):

- ``longclip:LongCLIP-B`` / ``longclip:LongCLIP-L``   the released checkpoints (BeichenZhang/LongCLIP-B, -L on the
                                                      Hugging Face hub), built on ViT-B-16 / ViT-L-14 (QuickGELU)
- ``longclip:ARCH:/path/longclip-B.pt``               any open_clip architecture with a local Long-CLIP checkpoint

A Long-CLIP checkpoint is an OpenAI-layout state dict with two (248, W) positional tables; it is loaded into an
open_clip model with ``retrieval.algorithms.longtext.load_longclip_checkpoint`` (effective table: rows 0..19 of
``positional_embedding`` plus rows 20.. of ``positional_embedding_res``), and the tokenizer gets its 248-token
context. Released weights come from the Hugging Face cache, or the hub when it can be reached; otherwise
``WeightsUnavailable`` says how to get them.
"""
from __future__ import annotations

import os
from pathlib import Path

from retrieval.errors import UnknownModel, WeightsUnavailable

PREFIX = "longclip:"
# released name -> (open_clip architecture, hub repo, file)
RELEASED = {
    "LongCLIP-B": ("ViT-B-16-quickgelu", "BeichenZhang/LongCLIP-B", "longclip-B.pt"),
    "LongCLIP-L": ("ViT-L-14-quickgelu", "BeichenZhang/LongCLIP-L", "longclip-L.pt"),
}


def parse_longclip_spec(spec: str):
    """``longclip:NAME`` or ``longclip:ARCH:/path/ckpt.pt`` -> ``ModelSpec("longclip", arch, source)``."""
    import open_clip

    from retrieval.models.factory import ModelSpec, register_configs

    rest = spec[len(PREFIX):].strip()
    if rest in RELEASED:
        return ModelSpec("longclip", arch=RELEASED[rest][0], source=rest)
    arch, sep, path = rest.partition(":")
    if not sep or not path:
        raise UnknownModel(f"bad Long-CLIP spec {spec!r}: expected {', '.join(PREFIX + n for n in RELEASED)} "
                           f"or {PREFIX}ARCH:/path/to/longclip.pt")
    register_configs()
    if arch not in open_clip.list_models():
        raise UnknownModel(f"unknown architecture {arch!r} in {spec!r} (LongCLIP-B is ViT-B-16-quickgelu, "
                           "LongCLIP-L is ViT-L-14-quickgelu)")
    file = Path(path).expanduser()
    if not file.is_file():
        raise UnknownModel(f"Long-CLIP checkpoint file not found: {file}")
    return ModelSpec("longclip", arch=arch, source=str(file.resolve()))


def longclip_spec_str(spec) -> str:
    return f"{PREFIX}{spec.source}" if spec.source in RELEASED else f"{PREFIX}{spec.arch}:{spec.source}"


def released_checkpoint(name: str) -> str:
    """Local path of a released Long-CLIP checkpoint: the Hugging Face cache, else a download when online."""
    from retrieval.models.factory import _hub_cached_file, _hub_reachable

    arch, repo, file = RELEASED[name]
    hit = _hub_cached_file(repo, (file,))
    if hit:
        return hit
    how = (f"download {file} from https://huggingface.co/{repo} on a connected machine and use "
           f"{PREFIX}{arch}:/path/to/{file} (or copy the Hugging Face cache here)")
    if not _hub_reachable():
        raise WeightsUnavailable(f"Long-CLIP weights {repo}/{file} are not in the local cache and the Hugging Face "
                                 f"hub cannot be reached (offline): {how}")
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(repo, file)
    except Exception as exc:  # network errors of every library in the chain
        raise WeightsUnavailable(f"Long-CLIP weights {repo}/{file} could not be downloaded "
                                 f"({str(exc).splitlines()[0][:160]}): {how}") from exc


def create_longclip_model(spec, device: str = "cpu"):
    """Build ``(model, preprocess, tokenizer)`` for a ``longclip`` spec: the architecture without weights, then
    the Long-CLIP checkpoint loaded strictly, the text context set to the checkpoint's (248)."""
    import open_clip
    import torch

    from retrieval.algorithms.longtext import load_longclip_checkpoint
    from retrieval.models.factory import _quiet_root_warning, register_configs

    register_configs()
    path = released_checkpoint(spec.source) if spec.source in RELEASED else spec.source
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickles, archives and corrupt files raise many types
        raise UnknownModel(f"cannot read Long-CLIP checkpoint {path}: {str(exc).splitlines()[0][:200]}") from exc
    if not isinstance(state, dict):
        raise UnknownModel(f"{path} is not a state dict (a TorchScript archive? save model.state_dict() instead)")
    with _quiet_root_warning():
        model, _, preprocess = open_clip.create_model_and_transforms(spec.arch, pretrained=None, device="cpu")
    try:
        n_ctx = load_longclip_checkpoint(model, state)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise UnknownModel(f"cannot load {os.path.basename(path)} into {spec.arch}: {str(exc).splitlines()[0][:200]}") from exc
    tokenizer = open_clip.get_tokenizer(spec.arch, context_length=n_ctx)
    return model.to(device).eval(), preprocess, tokenizer
