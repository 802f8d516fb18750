"""Train RECO's fusers on an index's own image-caption pairs (``clipdex train-reco``).

The memory is every captioned row of the ``images`` table: its image ``vector`` and caption ``text_vector``
(2 · M · D floats held in memory). Neighbours come from the index's own searches (k + 1 each, so the pair's own
match can be excluded: :func:`retrieval.algorithms.reco.train_reco` masks it). The checkpoint at ``out`` is written
atomically every epoch; ``resume`` continues from it. The finished file also records the model and k.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

from retrieval import algorithms  # RECO's names (torch) load on first use, through the package
from retrieval.classify.support import TABLE, memory_neighbours, memory_pairs, require_captions
from retrieval.errors import InvalidInput
from retrieval.index.directory import open_index
from retrieval.io.workers import Progress

log = logging.getLogger(__name__)


def train_reco_on_index(index_path: str, out: str | os.PathLike, epochs: int = 10, k: int = 10,
                        batch_size: int = 256, lr: float = 1e-4, seed: int = 0, resume: bool = False,
                        device: str | None = None, on_progress: Callable[[Progress], None] | None = None) -> dict:
    """Train and save the (image, text) fusers; returns ``dict(pairs, epochs, final_loss, history, out)``.

    ``on_progress`` hears ``Progress("neighbours", done, total)`` while neighbours are searched, then
    ``Progress("epoch", epoch, epochs, {"loss": mean loss})`` after each epoch."""
    out = Path(out)
    with open_index(index_path) as ix:
        if not ix.store.has_table(TABLE):
            raise InvalidInput(f"{index_path} has no images table")
        require_captions(ix, "train-reco")
        if resume and out.is_file():
            prev = algorithms.load_reco_checkpoint(out)
            if prev.get("model") not in (None, ix.model) or prev.get("dim") != ix.dim:
                raise InvalidInput(f"{out} was trained for another model ({prev.get('model')}); choose a new --out")
        elif resume:
            log.warning("no checkpoint at %s: training from the start", out)
        ids, img, txt = memory_pairs(ix)
        if len(ids) < 2:
            raise InvalidInput(f"train-reco needs at least 2 captioned images; {index_path} has {len(ids)}")
        if len(ids) <= k:
            log.warning("the index holds %d captioned images, fewer than k + 1 = %d: using k = %d",
                        len(ids), k + 1, len(ids) - 1)
        cb = None if on_progress is None else (lambda d, t: on_progress(Progress("neighbours", d, t)))
        inb, tnb = memory_neighbours(ix, ids, img, txt, k, on_progress=cb)
        model = ix.model
    epoch_cb = None if on_progress is None else (
        lambda p: on_progress(Progress("epoch", p["epoch"], p["epochs"], {"loss": p["loss"]})))
    try:
        _, _, history = algorithms.train_reco(img, txt, inb, tnb, epochs=epochs, batch_size=batch_size, lr=lr,
                                              seed=seed, on_progress=epoch_cb, checkpoint_path=out, resume=resume,
                                              device=device)
    except ValueError as exc:  # a checkpoint of another shape
        raise InvalidInput(str(exc).splitlines()[0]) from None
    state = algorithms.load_reco_checkpoint(out)
    state.update(model=model, k=k, pairs=len(ids))  # plain values: the file stays loadable with weights_only
    algorithms.save_reco_checkpoint(out, state)
    return dict(pairs=len(ids), epochs=len(history), final_loss=history[-1]["loss"] if history else float("nan"),
                history=history, out=str(out))
