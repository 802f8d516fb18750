"""Where weights come from: the local cache first, then the Hugging Face hub when it can be reached, else a
``WeightsUnavailable`` that says how to get them. Also ``quiet_random_init`` for weightless models."""
from __future__ import annotations

import contextlib
import logging
import os
import socket
from urllib.parse import urlparse

from retrieval.errors import WeightsUnavailable
from retrieval.models.specs import ModelSpec

WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def hub_cached_file(repo_id: str, filenames) -> str | None:
    """Path of the first of ``filenames`` of hub repo ``repo_id`` in the local cache, or None."""
    from huggingface_hub import try_to_load_from_cache  # optional, slow import: only when weights are looked up

    for name in filenames:
        try:
            hit = try_to_load_from_cache(repo_id, name)
        except Exception:  # malformed repo ids and the like: treat as not cached
            hit = None
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint answers (False at once with ``HF_HUB_OFFLINE=1``)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants  # optional, slow import: only when weights are fetched

    parsed = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_repo_and_files(pretrained_cfg: dict) -> tuple[str, tuple[str, ...]]:
    hub = pretrained_cfg.get("hf_hub", "").strip("/")
    parts = hub.split("/")
    if len(parts) > 2:  # "org/repo/filename"
        return "/".join(parts[:2]), ("/".join(parts[2:]),)
    return hub, WEIGHT_FILES


def _unavailable(spec: ModelSpec, what: str) -> WeightsUnavailable:
    return WeightsUnavailable(
        f"weights for {spec} are not in the local cache and {what}: download them on a connected machine "
        f"(python -c \"import open_clip; open_clip.create_model('{spec.arch or spec}', pretrained='{spec.source}')\") "
        "and copy the Hugging Face cache here (or point HF_HOME at it), "
        "or pass a local checkpoint as ARCH:/path/to/ckpt"
    )


def cached_weights(spec: ModelSpec) -> str | None:
    """Path of the cached weights for a pretrained or hub spec, or None when they are not cached."""
    import open_clip  # heavy (torch): only when weights are looked up

    if spec.kind == "pretrained":
        cfg = open_clip.get_pretrained_cfg(spec.arch, spec.source)
        if cfg.get("hf_hub"):
            repo, files = _hub_repo_and_files(cfg)
            return hub_cached_file(repo, files)
        url = cfg.get("url", "")
        target = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url)) if url else ""
        return target if target and os.path.isfile(target) else None
    if spec.kind == "hf-hub":
        config = hub_cached_file(spec.source, ("open_clip_config.json",))
        weights = hub_cached_file(spec.source, WEIGHT_FILES)
        return weights if config and weights else None
    return None


def fetch_weights(spec: ModelSpec) -> str:
    """Download the weights (or hub snapshot) of a spec that is not cached; return a local path."""
    import open_clip  # heavy (torch): only when weights are fetched

    if not hub_reachable():
        raise _unavailable(spec, "the Hugging Face hub cannot be reached (offline)")
    try:
        if spec.kind == "pretrained":
            cfg = open_clip.get_pretrained_cfg(spec.arch, spec.source)
            path = open_clip.download_pretrained(cfg)
        else:
            from huggingface_hub import snapshot_download  # optional, slow import: only when downloading

            path = snapshot_download(spec.source, allow_patterns=["open_clip_config.json", *WEIGHT_FILES])
    except Exception as exc:  # network errors of every library in the chain
        raise _unavailable(spec, f"the download failed ({str(exc).splitlines()[0][:160]})") from exc
    if not path:
        raise _unavailable(spec, "open_clip knows no download location for them")
    return path


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def quiet_random_init():
    """open_clip warns on the root logger that a weightless model is random: for clipdex-tiny that is the point."""
    root = logging.getLogger()
    flt = _DropRandomInitWarning()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)
