"""RECO: retrieval-enhanced contrastive vision-text models (Iscen, Caron, Fathi, Schmid, "Retrieval-Enhanced
Contrastive Vision-Text Models", ICLR 2024; no official code — implemented from the paper).

Uni-modal search, cross-modal fusion over a memory of (image, text) embedding pairs (v_m, t_m):
  * image query v: its k nearest memory *images* (v · v_m) -> their paired *texts* are fused into v;
  * text query t:  its k nearest memory *texts*  (t · t_m) -> their paired *images* are fused into t.
Fusion: one transformer-encoder layer over the k + 1 tokens [query; retrieved], read at the query token,
L2-normalised (:class:`RecoFuser`); separate fusers for images and texts. CLIP stays frozen; the fusers train with
    L = NCE(v̄, t̄) + NCE(v̄, t) + NCE(v, t̄)          (symmetric InfoNCE, :func:`reco_loss`)
excluding each training pair's own index from its retrieved set (:func:`train_reco`).
Training-free baseline: :func:`reco_mean_fuse` = norm(query + weight · mean_k retrieved).
Zero-shot classification: refine the image, refine each class prompt, score v̄ · t̄_c.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retrieval.algorithms.arrays import as_f32, as_i64, grid_pick, l2_normalize
from retrieval.errors import InvalidInput

log = logging.getLogger(__name__)

DEFAULT_K = 10
CHECKPOINT_VERSION = 1


def reco_mean_fuse(query, retrieved, weight: float) -> np.ndarray:
    """Training-free fusion ``norm(query + weight · mean_k retrieved)``: query (N, D), retrieved (N, k, D) -> (N, D).

    weight = 0 returns ``norm(query)``.
    """
    q = as_f32(query, "query", ndim=2)
    r = as_f32(retrieved, "retrieved", ndim=3)
    if r.shape[0] != q.shape[0] or r.shape[2] != q.shape[1]:
        raise ValueError(f"retrieved {r.shape} must be (N={q.shape[0]}, k, D={q.shape[1]})")
    mean = r.mean(axis=1) if r.shape[1] else np.zeros_like(q)
    return l2_normalize(q + weight * mean).astype(np.float32)


RECO_WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)


def reco_search_weight(val_feats, val_labels, val_retrieved, class_text, class_retrieved,
                       weights=RECO_WEIGHTS, rule: str = "best") -> tuple[float, float]:
    """The mean-fusion weight with the best accuracy on a labelled split: val_feats (n, D), val_labels (n,),
    val_retrieved (n, k, D) texts of their image neighbours, class_text (C, D), class_retrieved (C, k, D) images of
    their text neighbours -> (weight, accuracy). 0 (zero-shot) is in the grid; ties keep the smaller weight.
    ``rule="1se"``: the smallest weight within one standard error of the best (``arrays.one_se_pick``)."""
    y = as_i64(val_labels, "val_labels")
    accs = []
    for w in weights:
        v = reco_mean_fuse(val_feats, val_retrieved, w)
        t = reco_mean_fuse(class_text, class_retrieved, w)
        accs.append(float(np.mean(np.argmax(v @ t.T, axis=1) == y)))
    j = grid_pick(accs, y.shape[0], weights, rule)
    return float(weights[j]), accs[j]


RECO_BLENDS = (0.0, 0.25, 0.5, 0.75, 1.0)


def reco_blend_logits(zs_cos, fused_cos, blend: float) -> np.ndarray:
    """Zero-shot and RECO cosines mixed: ``(1 − blend) · v·t + blend · v̄·t̄``; zs_cos, fused_cos (N, C) -> (N, C).
    blend = 1 is RECO as trained, 0 is zero-shot CLIP."""
    z = as_f32(zs_cos, "zs_cos", ndim=2)
    f = as_f32(fused_cos, "fused_cos", ndim=2)
    if z.shape != f.shape:
        raise ValueError(f"zs_cos {z.shape} and fused_cos {f.shape} differ")
    return ((1.0 - blend) * z + blend * f).astype(np.float32)


def reco_search_blend(zs_cos, fused_cos, labels, blends=RECO_BLENDS, rule: str = "1se") -> tuple[float, float]:
    """The blend of :func:`reco_blend_logits` chosen on a labelled split: zs_cos, fused_cos (n, C), labels (n,) ->
    (blend, accuracy); ``rule`` as :func:`reco_search_weight` (complexity = blend, 0 = zero-shot)."""
    y = as_i64(labels, "labels")
    accs = [float(np.mean(np.argmax(reco_blend_logits(zs_cos, fused_cos, b), axis=1) == y)) for b in blends]
    j = grid_pick(accs, y.shape[0], blends, rule)
    return float(blends[j]), accs[j]


def knn_ids(xq, xb, k: int, exclude_self: bool = False) -> np.ndarray:
    """Exact inner-product k-NN: xq (N, D), xb (M, D) -> ids (N, k) int64, best first (ties by lower id).

    ``exclude_self`` (xq is xb) skips each row's own id. Brute force in row blocks; for large memories use the
    clipdex index instead.
    """
    q = as_f32(xq, "xq", ndim=2)
    b = as_f32(xb, "xb", ndim=2)
    k_eff = min(k, b.shape[0] - (1 if exclude_self else 0))
    out = np.empty((q.shape[0], k_eff), dtype=np.int64)
    for r0 in range(0, q.shape[0], 1024):
        s = q[r0 : r0 + 1024] @ b.T
        if exclude_self:
            rows = np.arange(s.shape[0])
            s[rows, r0 + rows] = -np.inf
        part = np.argpartition(-s, k_eff - 1, axis=1)[:, :k_eff] if k_eff < s.shape[1] else np.tile(
            np.arange(s.shape[1]), (s.shape[0], 1))
        ps = np.take_along_axis(s, part, axis=1)
        order = np.lexsort((part, -ps), axis=1)
        out[r0 : r0 + s.shape[0]] = np.take_along_axis(part, order, axis=1)
    return out


class RecoFuser(nn.Module):
    """One pre-norm transformer-encoder layer over [query; retrieved] tokens; output = L2-normalised query token.

    forward(query (B, D), retrieved (B, k, D), retrieved_mask (B, k) bool, True = ignore) -> (B, D) unit rows.
    Same parameters and result at token 0 as ``nn.TransformerEncoderLayer(D, heads, ff_mult·D, norm_first=True,
    activation="gelu", batch_first=True)`` (submodules share its names, so state dicts load into it), but only the
    query token is computed past the key/value projections — in a single layer the other outputs are never used —
    which makes training about 3x cheaper. The attention and feed-forward output projections start at zero, so an
    untrained fuser returns ``norm(query)`` and training learns a residual correction. A learned token-type
    embedding tells the query token from retrieved ones (no positions: the retrieved items are a set).
    """

    def __init__(self, dim: int, heads: int = 8, ff_mult: int = 2, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim, self.heads, self.ff_mult, self.dropout = dim, heads, ff_mult, dropout
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, ff_mult * dim)
        self.linear2 = nn.Linear(ff_mult * dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        self.token_type = nn.Parameter(torch.zeros(2, dim))
        nn.init.zeros_(self.self_attn.out_proj.weight)
        nn.init.zeros_(self.self_attn.out_proj.bias)
        nn.init.zeros_(self.linear2.weight)
        nn.init.zeros_(self.linear2.bias)

    def forward(self, query: torch.Tensor, retrieved: torch.Tensor,
                retrieved_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, k, D = retrieved.shape
        tokens = torch.cat([query[:, None, :] + self.token_type[0], retrieved + self.token_type[1]], dim=1)
        mask = None
        if retrieved_mask is not None:
            mask = torch.cat([torch.zeros(B, 1, dtype=torch.bool, device=query.device), retrieved_mask.bool()], 1)
        h = self.norm1(tokens)  # (B, k + 1, D)
        attn, _ = self.self_attn(h[:, :1], h, h, key_padding_mask=mask, need_weights=False)  # (B, 1, D)
        x = tokens[:, 0] + self.drop(attn[:, 0])
        x = x + self.drop(self.linear2(self.drop(F.gelu(self.linear1(self.norm2(x))))))
        return F.normalize(x, dim=-1)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between matched rows: ``½ [CE(a bᵀ/τ, I) + CE(b aᵀ/τ, I)]``; a, b (B, D) -> scalar."""
    logits = a @ b.T / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def reco_loss(v: torch.Tensor, t: torch.Tensor, v_bar: torch.Tensor, t_bar: torch.Tensor,
              temperature: float = 0.07) -> torch.Tensor:
    """``NCE(v̄, t̄) + NCE(v̄, t) + NCE(v, t̄)`` with :func:`info_nce`; all inputs (B, D) unit rows -> scalar."""
    return (info_nce(v_bar, t_bar, temperature) + info_nce(v_bar, t, temperature)
            + info_nce(v, t_bar, temperature))


def _device(device: str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def reco_refine(fuser: RecoFuser, query, retrieved, retrieved_mask=None, batch_size: int = 1024) -> np.ndarray:
    """Apply a trained fuser: query (N, D), retrieved (N, k, D) -> refined (N, D) float32 unit rows."""
    q = as_f32(query, "query", ndim=2)
    r = as_f32(retrieved, "retrieved", ndim=3)
    was_training = fuser.training
    fuser.eval()
    dev = next(fuser.parameters()).device
    out = np.empty_like(q)
    for s in range(0, q.shape[0], batch_size):
        m = None
        if retrieved_mask is not None:
            m = torch.as_tensor(np.asarray(retrieved_mask[s : s + batch_size]), device=dev)
        out[s : s + batch_size] = fuser(torch.from_numpy(q[s : s + batch_size]).to(dev),
                                        torch.from_numpy(r[s : s + batch_size]).to(dev), m).cpu().numpy()
    fuser.train(was_training)
    return out


def train_reco_step(image_fuser: RecoFuser, text_fuser: RecoFuser, optimizer: torch.optim.Optimizer,
                    v: torch.Tensor, t: torch.Tensor, v_ret: torch.Tensor, t_ret: torch.Tensor,
                    v_mask: torch.Tensor | None, t_mask: torch.Tensor | None, temperature: float) -> float:
    """One optimisation step on a batch: v, t (B, D) frozen pair embeddings; v_ret (B, k, D) texts retrieved for
    the images, t_ret (B, k, D) images retrieved for the texts; masks (B, k) True = excluded. Returns the loss."""
    image_fuser.train()
    text_fuser.train()
    v_bar = image_fuser(v, v_ret, v_mask)
    t_bar = text_fuser(t, t_ret, t_mask)
    loss = reco_loss(v, t, v_bar, t_bar, temperature)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def save_reco_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write a checkpoint atomically (a temporary file, then a rename). ``payload`` holds only tensors, state dicts
    and plain values (numbers, strings, lists, dicts), so that :func:`load_reco_checkpoint` can read it back
    without running code."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_reco_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """A RECO checkpoint as a dict, read with ``torch.load(weights_only=True)``: tensors and plain values only.

    A file holding pickled objects (which could run code while loading) is refused with ``InvalidInput``, as is
    an unreadable file or one that is not a RECO checkpoint (no ``image_fuser`` / ``text_fuser``, ``dim``)."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc):  # the file names a class or function to import: an object, not data
            raise InvalidInput(f"{path} holds pickled Python objects, not only tensors and plain values; clipdex "
                               f"does not load such files (loading them can run code): retrain with clipdex "
                               f"train-reco") from None
        raise InvalidInput(f"cannot read RECO checkpoint {path}: not a PyTorch checkpoint file") from None
    except (OSError, RuntimeError, ValueError, EOFError, AttributeError, TypeError) as exc:
        raise InvalidInput(f"cannot read RECO checkpoint {path}: {' '.join(str(exc).split())[:160]}") from None
    if not isinstance(state, dict) or not {"image_fuser", "text_fuser", "dim"} <= set(state):
        raise InvalidInput(f"{path} is not a RECO checkpoint (expected the image and text fusers clipdex "
                           f"train-reco writes)")
    return state


def fusers_from_checkpoint(state: dict, path: str | os.PathLike = "checkpoint") -> tuple[RecoFuser, RecoFuser]:
    """The (image, text) fusers of a checkpoint dict from :func:`load_reco_checkpoint`, in eval mode."""
    fusers = []
    try:
        for key in ("image_fuser", "text_fuser"):
            f = RecoFuser(int(state["dim"]), int(state.get("heads", 8)))
            f.load_state_dict(state[key])
            fusers.append(f.eval())
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise InvalidInput(f"cannot load RECO fuser {path}: {' '.join(str(exc).split())[:160]}") from None
    return fusers[0], fusers[1]


def train_reco(image_embs, text_embs, image_neighbors, text_neighbors, epochs: int = 10, batch_size: int = 256,
               lr: float = 1e-4, seed: int = 0, on_progress: Callable[[dict], None] | None = None,
               checkpoint_path: str | os.PathLike | None = None, resume: bool = True, *, heads: int = 8,
               temperature: float = 0.07, weight_decay: float = 0.0, checkpoint_every: int = 1,
               device: str | None = None) -> tuple[RecoFuser, RecoFuser, list[dict]]:
    """Train RECO's image and text fusers on a memory of M (image, text) pairs.

    image_embs, text_embs (M, D) unit rows of the pairs; image_neighbors (M, k) int: ids of the nearest memory
    *images* of image i (its fuser reads ``text_embs[image_neighbors[i]]``); text_neighbors (M, k) int: ids of the
    nearest memory *texts* of text i (its fuser reads ``image_embs[text_neighbors[i]]``). A neighbour equal to the
    pair's own index is masked out. Adam(W) on both fusers, shuffling with ``seed`` + epoch (so a resumed run sees
    the same batches as an uninterrupted one). ``on_progress(dict(epoch, epochs, loss))`` after each epoch.
    With ``checkpoint_path``, a checkpoint (fuser and optimizer state dicts, epoch, history) is written atomically
    every ``checkpoint_every`` epochs and at the end; with ``resume`` an existing one is loaded and training
    continues from its epoch. Returns ``(image_fuser, text_fuser, history)`` — fusers in eval mode on the CPU,
    history a list of ``dict(epoch, loss)`` (mean training loss of that epoch).
    """
    v_all = as_f32(image_embs, "image_embs", ndim=2)
    t_all = as_f32(text_embs, "text_embs", ndim=2)
    inb = as_i64(image_neighbors, "image_neighbors", ndim=2)
    tnb = as_i64(text_neighbors, "text_neighbors", ndim=2)
    M, D = v_all.shape
    if t_all.shape != (M, D) or inb.shape[0] != M or tnb.shape[0] != M:
        raise ValueError(f"shapes disagree: images {v_all.shape}, texts {t_all.shape}, "
                         f"neighbours {inb.shape}, {tnb.shape}")
    dev = _device(device)
    torch.manual_seed(seed)
    image_fuser = RecoFuser(D, heads).to(dev)
    text_fuser = RecoFuser(D, heads).to(dev)
    params = list(image_fuser.parameters()) + list(text_fuser.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    history: list[dict] = []
    start_epoch = 0
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    if ckpt is not None and resume and ckpt.exists():
        state = load_reco_checkpoint(ckpt, map_location=dev)
        if state.get("version") != CHECKPOINT_VERSION or state.get("dim") != D or state.get("heads") != heads:
            raise ValueError(f"checkpoint {ckpt} does not match this run (dim {D}, heads {heads})")
        image_fuser.load_state_dict(state["image_fuser"])
        text_fuser.load_state_dict(state["text_fuser"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history = int(state["epoch"]), list(state["history"])
        log.info("resumed RECO training from %s at epoch %d", ckpt, start_epoch)

    v_t, t_t = torch.from_numpy(v_all).to(dev), torch.from_numpy(t_all).to(dev)
    inb_t, tnb_t = torch.from_numpy(inb).to(dev), torch.from_numpy(tnb).to(dev)
    own = torch.arange(M, device=dev)[:, None]

    def save(epoch_done: int) -> None:
        if ckpt is not None:
            save_reco_checkpoint(ckpt, dict(version=CHECKPOINT_VERSION, dim=D, heads=heads, epoch=epoch_done,
                                        history=history, image_fuser=image_fuser.state_dict(),
                                        text_fuser=text_fuser.state_dict(), optimizer=optimizer.state_dict()))

    for epoch in range(start_epoch, epochs):
        perm = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(M)).to(dev)
        total, count = 0.0, 0
        for s in range(0, M, batch_size):
            b = perm[s : s + batch_size]
            if b.numel() < 2:  # InfoNCE needs negatives
                continue
            loss = train_reco_step(image_fuser, text_fuser, optimizer, v_t[b], t_t[b], t_t[inb_t[b]], v_t[tnb_t[b]],
                                   inb_t[b] == own[b], tnb_t[b] == own[b], temperature)
            total += loss * b.numel()
            count += b.numel()
        history.append(dict(epoch=epoch + 1, loss=total / max(count, 1)))
        log.debug("RECO epoch %d/%d loss %.4f", epoch + 1, epochs, history[-1]["loss"])
        if on_progress is not None:
            on_progress(dict(epoch=epoch + 1, epochs=epochs, loss=history[-1]["loss"]))
        if (epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs:
            save(epoch + 1)
    image_fuser.cpu().eval()
    text_fuser.cpu().eval()
    return image_fuser, text_fuser, history
