"""A text query without torch: the CLIP text tower exported once as numpy arrays and run with numpy.

A one-shot ``clipdex search INDEX "text"`` used to spend most of its time importing torch and open_clip. The first
time a model is loaded through an index (``Index.encoder``), ``ensure_text_tower`` writes its text transformer's
weights (one ``.npy`` per array) and a ``meta.json`` to a per-model folder of the user cache
(``cache_root()/text-towers/<key>``), after checking on probe texts that the numpy forward pass gives
the torch encoder's vectors to 1e-4 (otherwise nothing is written and queries keep using torch). Later text
queries on the CPU load ``TowerEncoder`` (``load_tower_encoder``): the torch-free BPE tokenizer of
``retrieval.encode.bpe`` and ``tower_forward``, with the interface ``encode_long_texts`` needs.

Supported: open_clip's ``CLIP`` text tower (pre-LayerNorm residual blocks with ``nn.MultiheadAttention``, GELU or
QuickGELU, optional LayerScale, causal mask, argmax/first/last pooling, projection matrix or linear) and its
``SimpleTokenizer``; any other model (HF text towers, Long-CLIP stretched copies) keeps the torch path.
``CLIPDEX_TEXT_TOWER=torch`` turns the numpy path off.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np

from retrieval.encode.bpe import load_bpe
from retrieval.encode.text import encode_long_texts
from retrieval.errors import InvalidInput
from retrieval.models.specs import ModelSpec

log = logging.getLogger(__name__)

FORMAT = 1
TOLERANCE = 1e-4
PROBES = ("a photo of a cat", "A red CIRCLE on a white background!", "x", "3 dogs & 2 cats, running... fast?")
BLOCK_KEYS = {"ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
              "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
              "mlp.c_proj.weight", "mlp.c_proj.bias"}
OPTIONAL_BLOCK_KEYS = {"ls_1.gamma", "ls_2.gamma"}


def tower_dir(spec: str) -> Path:
    """The cache folder of a model's exported text tower, for the canonical spec string (as in an index manifest;
    not parsed here, since parsing imports open_clip). The key covers the torch and open_clip versions too
    (random-initialised models depend on them); a checkpoint's size and mtime are checked from ``meta.json``."""
    parts = [str(spec), _version("torch"), _version("open_clip_torch")]
    key = hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]
    return cache_root() / "text-towers" / key


def cache_root() -> Path:
    """clipdex's cache folder: ``$CLIPDEX_CACHE``, else ``$XDG_CACHE_HOME/clipdex``, else ``~/.cache/clipdex``."""
    if os.environ.get("CLIPDEX_CACHE"):
        return Path(os.environ["CLIPDEX_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "clipdex"


def _source_stat(spec: ModelSpec) -> list | None:
    """[path, size, mtime_ns] of a model given by a file or folder, None for named models."""
    if spec.kind in ("checkpoint", "local-dir", "longclip") and spec.source and os.path.exists(spec.source):
        st = os.stat(spec.source)
        return [spec.source, st.st_size, st.st_mtime_ns]
    return None


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def enabled() -> bool:
    return os.environ.get("CLIPDEX_TEXT_TOWER", "auto").lower() != "torch"


# -- the forward pass (pure numpy) -----------------------------------------------------------------------------
def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to ~1e-7 (Abramowitz & Stegun 7.1.26 refined by one Newton step is not needed at this tolerance)."""
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return s * (1.0 - poly * np.exp(-a * a))


def _act(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "quick_gelu":
        return x / (1.0 + np.exp(-1.702 * x))
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))


def tower_forward(w: dict, meta: dict, tokens: np.ndarray) -> np.ndarray:
    """(B, ctx) int token ids (start/end tokens included) -> (B, d) float32 unit rows, as the torch text tower.

    ``w``: the exported arrays; ``meta``: heads, layers, eps, act, pool, causal."""
    tokens = np.asarray(tokens, np.int64)
    b, n = tokens.shape
    x = w["token_embedding"][tokens] + w["positional_embedding"][:n]  # (B, n, width)
    heads, eps = int(meta["heads"]), float(meta["eps"])
    width = x.shape[-1]
    dh = width // heads
    mask = np.triu(np.full((n, n), -np.inf, np.float32), 1) if meta["causal"] else None
    for i in range(int(meta["layers"])):
        p = f"blocks.{i}."
        h = _layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = h @ w[p + "attn.in_proj_weight"].T + w[p + "attn.in_proj_bias"]  # (B, n, 3 width)
        q, k, v = (qkv[..., j * width:(j + 1) * width].reshape(b, n, heads, dh).transpose(0, 2, 1, 3)
                   for j in range(3))
        att = (q / np.sqrt(dh)) @ k.transpose(0, 1, 3, 2)  # (B, heads, n, n)
        if mask is not None:
            att = att + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        h = (att @ v).transpose(0, 2, 1, 3).reshape(b, n, width)
        h = h @ w[p + "attn.out_proj.weight"].T + w[p + "attn.out_proj.bias"]
        x = x + (h * w[p + "ls_1.gamma"] if p + "ls_1.gamma" in w else h)
        h = _layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        h = _act(h @ w[p + "mlp.c_fc.weight"].T + w[p + "mlp.c_fc.bias"], meta["act"])
        h = h @ w[p + "mlp.c_proj.weight"].T + w[p + "mlp.c_proj.bias"]
        x = x + (h * w[p + "ls_2.gamma"] if p + "ls_2.gamma" in w else h)
    x = _layer_norm(x, w["ln_final.weight"], w["ln_final.bias"], float(meta["final_eps"]))
    at = {"argmax": tokens.argmax(-1), "first": np.zeros(b, np.int64), "last": np.full(b, n - 1)}[meta["pool"]]
    x = x[np.arange(b), at]
    x = x @ w["projection"] + (w["projection_bias"] if "projection_bias" in w else 0.0)
    x = x.astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# -- export (needs torch: runs where the model is already loaded) ----------------------------------------------
def _extract(model, tokenizer) -> tuple[dict, dict] | None:
    """(arrays, meta) of a supported text tower, None for any other kind of model."""
    names = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
    if not all(hasattr(model, a) for a in names) or getattr(model, "text_pool_type", "argmax") not in (
            "argmax", "first", "last"):
        return None
    if type(tokenizer).__name__ != "SimpleTokenizer" or len(getattr(tokenizer, "all_special_ids", ())) != 2:
        return None
    if (getattr(tokenizer, "reduction_fn", None) is not None
            or getattr(tokenizer.clean_fn, "__name__", "") != "_clean_lower"):
        return None
    blocks = list(getattr(model.transformer, "resblocks", []))
    if not blocks or type(blocks[0].attn).__name__ != "MultiheadAttention":
        return None
    act = type(blocks[0].mlp.gelu).__name__
    if act == "GELU" and getattr(blocks[0].mlp.gelu, "approximate", "none") == "none":
        act = "gelu"
    elif act == "QuickGELU":
        act = "quick_gelu"
    else:
        return None
    w = {"token_embedding": model.token_embedding.weight, "positional_embedding": model.positional_embedding,
         "ln_final.weight": model.ln_final.weight, "ln_final.bias": model.ln_final.bias}
    proj = model.text_projection
    if hasattr(proj, "weight"):  # nn.Linear
        w["projection"] = proj.weight.T
        if proj.bias is not None:
            w["projection_bias"] = proj.bias
    else:
        w["projection"] = proj
    for i, block in enumerate(blocks):
        state = block.state_dict()
        same_keys = BLOCK_KEYS <= set(state) <= BLOCK_KEYS | OPTIONAL_BLOCK_KEYS
        if not same_keys or block.attn.num_heads != blocks[0].attn.num_heads:
            return None
        w.update({f"blocks.{i}.{k}": v for k, v in state.items()})
    arrays = {k: v.detach().float().cpu().numpy() for k, v in w.items()}
    mask = getattr(model, "attn_mask", None)
    meta = {"format": FORMAT, "heads": int(blocks[0].attn.num_heads), "layers": len(blocks),
            "eps": float(blocks[0].ln_1.eps), "final_eps": float(model.ln_final.eps), "act": act,
            "pool": getattr(model, "text_pool_type", "argmax"), "causal": mask is not None,
            "context_length": int(tokenizer.context_length or arrays["positional_embedding"].shape[0])}
    return arrays, meta


def _reference(encoder, tokens: np.ndarray) -> np.ndarray:
    """The torch text tower in float32 (no autocast), normalised as the encoder does."""
    import torch  # heavy: only when exporting, where the model is already loaded

    with torch.inference_mode():
        feats = encoder.model.encode_text(torch.as_tensor(tokens).to(encoder.device)).float()
        return (feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy()


def export_text_tower(encoder, folder: Path) -> bool | None:
    """Write ``encoder``'s text tower to ``folder`` when it is supported and its numpy forward matches torch on the
    probe texts to ``TOLERANCE`` (tokens and vectors): True; False (nothing written) for a model it does not
    reproduce; None when the folder could not be written."""
    found = _extract(encoder.model, encoder.tokenizer)
    if found is None:
        return False
    arrays, meta = found
    bpe = load_bpe(None, meta["context_length"])
    ids = [encoder.tokenizer.encode(t) for t in PROBES]
    if [bpe.encode(t) for t in PROBES] != ids:
        log.warning("text tower not exported: the torch-free tokenizer disagrees with the model's")
        return False
    tokens = pack_tokens(ids, bpe.sot_token_id, bpe.eot_token_id, meta["context_length"])
    err = float(np.abs(tower_forward(arrays, meta, tokens) - _reference(encoder, tokens)).max())
    if not err <= TOLERANCE:
        log.warning("text tower not exported: numpy and torch differ by %.2g", err)
        return False
    spec = encoder.spec
    meta.update(spec=str(spec), model={"kind": spec.kind, "arch": spec.arch, "source": spec.source},
                source_stat=_source_stat(spec), dim=int(arrays["projection"].shape[1]), max_error=err)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        for name, a in arrays.items():  # one .npy per array, memory-mapped when loaded (a query reads few rows
            np.save(tmp / f"{name}.npy", a)  # of the token embedding)
        (tmp / "meta.json").write_text(json.dumps(meta))  # written last: a folder with meta.json is complete
        os.replace(tmp, folder)
    except OSError as exc:  # another process wrote it first, or a read-only or full cache (then: torch)
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "meta.json").is_file():
            log.warning("text tower not exported to %s: %s", folder, exc)
        return None
    return True


def ensure_text_tower(encoder) -> None:
    """Export ``encoder``'s text tower to its cache folder once (a no-op when present, disabled or on error)."""
    if not enabled():
        return
    folder = tower_dir(str(encoder.spec))
    if (folder / "meta.json").is_file() or (folder / "unsupported").exists():
        return
    try:
        done = export_text_tower(encoder, folder)
    except Exception as exc:  # noqa: BLE001 - an optimisation only: any failure leaves queries on torch
        log.warning("text tower not exported: %s", exc)
        done = False
    if done is False:
        try:  # remember it, so that the check is not redone on every load
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "unsupported").touch()
        except OSError:
            pass


def pack_tokens(ids: list[list[int]], sot: int, eot: int, ctx: int) -> np.ndarray:
    """Content ids per text -> (n, ctx) int64 rows ``[sot, ids..., eot, 0...]`` (ids already fit ``ctx - 2``)."""
    out = np.zeros((len(ids), ctx), np.int64)
    for r, row in enumerate(ids):
        out[r, : len(row) + 2] = [sot, *row, eot]
    return out


class TowerEncoder:
    """A text-only encoder over an exported tower: what ``encode_long_texts`` needs (tokenizer with ``encode``,
    ``token_ids``, ``encode_token_batch``, ``context_length``, ``dim``, ``spec``); no images, no Long-CLIP."""

    device = "cpu"
    precision = "fp32"

    def __init__(self, folder: Path):
        self.meta = json.loads((folder / "meta.json").read_text())
        self.spec = ModelSpec(**self.meta["model"])
        self.weights = {p.stem: np.load(p, mmap_mode="r") for p in folder.glob("*.npy")}
        self.context_length = int(self.meta["context_length"])
        self.dim = int(self.meta["dim"])
        self.tokenizer = load_bpe(None, self.context_length)

    def token_ids(self, texts) -> list[list[int]]:
        return [self.tokenizer.encode(t) for t in texts]

    def encode_token_batch(self, tokens, model=None) -> np.ndarray:
        if model is not None:
            raise NotImplementedError("the exported text tower has no variants (use the torch encoder)")
        return tower_forward(self.weights, self.meta, np.asarray(tokens))

    def encode_long_texts(self, texts, strategy: str = "chunk", **kwargs):
        return encode_long_texts(self, texts, strategy, **kwargs)

    def encode_images(self, images, batch_size: int = 64):
        raise InvalidInput("this encoder only encodes texts")


def load_tower_encoder(spec: str) -> TowerEncoder | None:
    """The exported text tower of the canonical ``spec`` string as an encoder, or None (not exported, unsupported,
    disabled, damaged, or its checkpoint file changed since)."""
    folder = tower_dir(spec)
    if not enabled() or not (folder / "meta.json").is_file():
        return None
    try:
        enc = TowerEncoder(folder)
        stat = enc.meta.get("source_stat")
        if stat and (lambda st: [stat[0], st.st_size, st.st_mtime_ns])(os.stat(stat[0])) != stat:
            return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the exported text tower in %s: %s", folder, exc)
        return None
    if enc.meta.get("format") != FORMAT or enc.meta.get("spec") != spec or str(enc.spec) != spec:
        return None
    return enc


def query_tower(manifest: dict, table: str, long_text: str | None, device: str | None) -> TowerEncoder | None:
    """The exported tower for a text query against ``table`` of an index with ``manifest``, when the query runs on
    the CPU (``device`` None or "cpu") with a strategy other than longclip (which needs the torch model)."""
    built = (manifest.get("tables", {}).get(table) or {}).get("long_text")
    if device not in (None, "cpu") or (long_text or built) == "longclip":
        return None
    return load_tower_encoder(manifest["model"])
