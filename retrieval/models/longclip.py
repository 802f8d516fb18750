"""Long-CLIP models: released checkpoints (LongCLIP-B/16, -L/14) and local Long-CLIP checkpoint files.

Their specs (``longclip:LongCLIP-B``, ``longclip:ARCH:/path/longclip-B.pt``) are parsed in
``retrieval.models.specs``. A Long-CLIP checkpoint is an OpenAI-layout state dict with two (248, W) positional
tables; it is loaded into an open_clip model with ``retrieval.algorithms.longtext.load_longclip_checkpoint``
(effective table: rows 0..19 of ``positional_embedding`` plus rows 20.. of ``positional_embedding_res``), and the
tokenizer gets its 248-token context. Released weights come from the Hugging Face cache, or the hub when it can be
reached; otherwise ``WeightsUnavailable`` says how to get them.
"""
from __future__ import annotations

import os

from retrieval.algorithms.longtext import load_longclip_checkpoint
from retrieval.errors import UnknownModel, WeightsUnavailable
from retrieval.models.hub import hub_cached_file, hub_reachable, quiet_random_init
from retrieval.models.specs import LONGCLIP_PREFIX, RELEASED_LONGCLIP, ModelSpec, register_configs


def released_checkpoint(name: str) -> str:
    """Local path of a released Long-CLIP checkpoint: the Hugging Face cache, else a download when online."""
    arch, repo, file = RELEASED_LONGCLIP[name]
    hit = hub_cached_file(repo, (file,))
    if hit:
        return hit
    how = (f"download {file} from https://huggingface.co/{repo} on a connected machine and use "
           f"{LONGCLIP_PREFIX}{arch}:/path/to/{file} (or copy the Hugging Face cache here)")
    if not hub_reachable():
        raise WeightsUnavailable(f"Long-CLIP weights {repo}/{file} are not in the local cache and the Hugging Face "
                                 f"hub cannot be reached (offline): {how}")
    try:
        from huggingface_hub import hf_hub_download  # optional, slow import: only when downloading

        return hf_hub_download(repo, file)
    except Exception as exc:  # network errors of every library in the chain
        raise WeightsUnavailable(f"Long-CLIP weights {repo}/{file} could not be downloaded "
                                 f"({str(exc).splitlines()[0][:160]}): {how}") from exc


def create_longclip_model(spec: ModelSpec, device: str = "cpu"):
    """Build ``(model, preprocess, tokenizer)`` for a ``longclip`` spec: the architecture without weights, then
    the Long-CLIP checkpoint loaded strictly, the text context set to the checkpoint's (248)."""
    import open_clip  # heavy (torch): only when a model is built
    import torch  # heavy: only when a model is built

    register_configs()
    path = released_checkpoint(spec.source) if spec.source in RELEASED_LONGCLIP else spec.source
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickles, archives and corrupt files raise many types
        raise UnknownModel(f"cannot read Long-CLIP checkpoint {path}: {str(exc).splitlines()[0][:200]}") from exc
    if not isinstance(state, dict):
        raise UnknownModel(f"{path} is not a state dict (a TorchScript archive? save model.state_dict() instead)")
    with quiet_random_init():
        model, _, preprocess = open_clip.create_model_and_transforms(spec.arch, pretrained=None, device="cpu")
    try:
        n_ctx = load_longclip_checkpoint(model, state)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise UnknownModel(f"cannot load {os.path.basename(path)} into {spec.arch}: "
                           f"{str(exc).splitlines()[0][:200]}") from exc
    tokenizer = open_clip.get_tokenizer(spec.arch, context_length=n_ctx)
    return model.to(device).eval(), preprocess, tokenizer
