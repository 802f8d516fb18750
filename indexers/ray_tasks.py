"""The worker side of ``--engine ray``: plan and decode in Ray tasks, embed and write Lance fragments in actors.

    shard --(task: read this shard's stored rows; plan each sample; decode only those still to do)--> samples
          --(actor: embed images and captions, write the rows as Lance fragments)--> fragment metadata
          --> the driver (indexers/ray_engine.py), which commits them

Every row that crosses Ray is small except the decoded pixels between a task and an actor: an actor hands back,
per shard of its batch, the JSON of the fragments it wrote and a few counts; a task ends its shard with the
shard's report (``ShardLedger.report``: counts, failures, stale error ids). Row ids are the shard's block reserved
by the driver plus the sample's number among the shard's embedded samples (each has its own tar member of at least
512 bytes, so a block of ``bytes // 512 + 1`` ids holds them all). New metadata columns go through one
``ColumnKeeper`` actor, which applies the local engine's rule (``MetaColumns``) and adds each accepted column to the
table before any fragment uses it.

Ray is imported lazily: it is a heavy optional dependency (the ``[ray]`` extra).
"""
from __future__ import annotations

import json
from typing import Iterator

import numpy as np
import pyarrow as pa

from indexers.common import Failure
from indexers.images import TABLE
from indexers.probe_rows import keep_codes
from indexers.shard_columns import MetaColumns
from indexers.shard_ledger import ShardLedger, read_stored_shard
from indexers.shards import decode_sample
from retrieval.encode.encoder import load_encoder
from retrieval.encode.text import encode_long_texts
from retrieval.io.files import stored_path
from retrieval.io.imageprep import ImagePrep
from retrieval.io.shards import Shard, ShardError, read_shard
from retrieval.store.base import vectors_to_arrow
from retrieval.store.lance_fragments import add_null_columns, table_schema, write_rows

END, SAMPLE, FRAG = "end", "sample", "frag"


def id_block(nbytes: int) -> int:
    """Ids to reserve for a shard of ``nbytes``: one per possible tar member (a 512-byte header at least)."""
    return nbytes // 512 + 1


class ColumnKeeper:
    """Ray actor: the one place new metadata columns are accepted (``MetaColumns``) and added to the table."""

    def __init__(self, lance_root: str, table_columns: list[str], builtin: list[str]):
        self.root = lance_root
        self.columns = MetaColumns(table_columns, builtin)
        self.added = set(table_columns)

    def accept(self, names: list[str]) -> dict[str, str | None]:
        """{name: None if it is (now) a column, else why not}, in the order asked."""
        kept, dropped = self.columns.split(dict.fromkeys(names))
        new = [n for n in kept if n not in self.added]
        if new:
            add_null_columns(self.root, TABLE, [pa.field(n, pa.string()) for n in new])
            self.added.update(new)
        why = dict(dropped)
        return {n: why.get(n) for n in names}


class _Columns:
    """A task's view of the keeper: verdicts cached per key (a kept key stays kept, a refused one refused)."""

    def __init__(self, ray, keeper):
        self.ray, self.keeper, self.verdict = ray, keeper, {}

    def split(self, meta: dict) -> tuple[dict, list[tuple[str, str]]]:
        new = [k for k in meta if k not in self.verdict]
        if new:
            self.verdict.update(self.ray.get(self.keeper.accept.remote(new)))
        return ({k: v for k, v in meta.items() if self.verdict[k] is None},
                [(k, self.verdict[k]) for k in meta if self.verdict[k] is not None])


def _block(rows: list[tuple], blank: np.ndarray) -> dict:
    return {"kind": np.array([r[0] for r in rows], dtype=object), "shard": np.array([r[1] for r in rows], dtype=object),
            "info": np.array([r[2] for r in rows], dtype=object),
            "pixels": np.stack([blank if r[3] is None else r[3] for r in rows])}


def plan_and_decode(batch: dict, prep: dict, lance_root: str, retry_errors: bool, keeper,
                    rows_per_batch: int = 32, codes_to: str = "") -> Iterator[dict]:
    """Ray task: shards (a batch of their descriptions) -> blocks of decoded samples still to embed, each shard
    closed by its ``END`` row (its report); samples already stored are neither decoded nor sent on. With
    ``codes_to`` (the index's folder), each shard's samples are also coded for dedup and their codes written there
    as one shard of codes (``indexers.probe_rows``): written before the driver commits the rows, which dedup's merge
    allows, as it keeps only codes whose row is in the table with the same content hash."""
    import ray  # heavy optional dependency: this runs in a Ray worker

    p = ImagePrep(**{**prep, "size": tuple(prep["size"])})
    blank = np.zeros((*p.size, 3), np.uint8)
    columns = _Columns(ray, keeper)
    out: list[tuple] = []
    for i in range(len(batch["path"])):
        shard = Shard(str(batch["path"][i]), int(batch["bytes"][i]), float(batch["mtime"][i]),
                      batch["parquet"][i] or None)
        stored = read_stored_shard(lance_root, shard.path, bool(batch["has_rows"][i]), bool(batch["has_errors"][i]))
        ledger = ShardLedger(shard, stored, retry_errors, columns.split)
        base, n = int(batch["id_base"][i]), 0
        coded: list[tuple] = []   # (id, content hash, probe codes) of the samples coded
        try:
            for sample in read_shard(shard):
                planned = ledger.plan(sample)
                if planned is None:
                    continue
                item, replaced = planned
                d = decode_sample(item.path, sample.image, p, bool(codes_to))
                if isinstance(d, Failure):
                    ledger.fail(Failure.of(item, d.stage, d.reason))
                    continue
                if d.codes is not None:
                    coded.append((base + n, d.hash, d.codes))
                info = {"id": base + n, "path": item.path, "bytes": item.bytes, "mtime": item.mtime,
                        "caption": item.caption, "meta": item.meta, "replaced": replaced, "hash": d.hash,
                        "width": d.width, "height": d.height}
                n += 1
                out.append((SAMPLE, shard.path, json.dumps(info), d.pixels))
                if len(out) >= rows_per_batch:
                    yield _block(out, blank)
                    out = []
        except ShardError as exc:
            ledger.break_off(exc.reason)
        if codes_to:
            keep_codes(codes_to, coded)
        out.append((END, shard.path, json.dumps(ledger.report()), None))
    if out:
        yield _block(out, blank)


def _runs(shards: list[str]) -> list[tuple[int, int]]:
    """[(start, stop)] of the runs of equal consecutive values."""
    edges = [0] + [i for i in range(1, len(shards)) if shards[i] != shards[i - 1]] + [len(shards)]
    return list(zip(edges[:-1], edges[1:]))


class EmbedWriter:
    """Ray actor: loads the index's model once; embeds a batch's images and captions and writes its rows as Lance
    fragments of the ``images`` table, one set per shard; hands back their metadata, never the rows."""

    def __init__(self, model: str, device: str | None, threads: int, lance_root: str, dim: int):
        import torch  # heavy optional dependency: only the actors set its threads

        torch.set_num_threads(max(1, threads))
        self.encoder = load_encoder(model, device=device)
        self.root, self.dim = lance_root, dim

    def __call__(self, batch: dict) -> dict:
        kinds = [str(k) for k in batch["kind"]]
        take = [i for i, k in enumerate(kinds) if k == SAMPLE]
        written: dict[int, str] = {}  # the position of a shard's first sample -> its FRAG row's info
        if take:
            infos = [json.loads(batch["info"][i]) for i in take]
            vectors = self.encoder.encode_prepared(batch["pixels"][take])
            texts, n_long = self._captions([x["caption"] for x in infos])
            shards = [str(batch["shard"][i]) for i in take]
            schema = table_schema(self.root, TABLE)
            for a, b in _runs(shards):
                frags = write_rows(self.root, TABLE, self._table(schema, infos[a:b], vectors[a:b], texts[a:b]))
                replaced = [x["replaced"] for x in infos[a:b] if x["replaced"] is not None]
                written[take[a]] = json.dumps({"fragments": frags, "rows": b - a, "replaced": replaced,
                                               "long_captions": int(n_long[a:b].sum())})
        out = {"kind": [], "shard": [], "info": []}
        for i, k in enumerate(kinds):
            if k == SAMPLE and i not in written:
                continue
            out["kind"].append(FRAG if k == SAMPLE else k)
            out["shard"].append(str(batch["shard"][i]))
            out["info"].append(written[i] if k == SAMPLE else str(batch["info"][i]))
        return {c: np.array(v, dtype=object) for c, v in out.items()}

    def _captions(self, captions: list[str | None]) -> tuple[list[np.ndarray | None], np.ndarray]:
        """Caption vectors (None where none) and 1 where a caption was long (chunk-pooled)."""
        out: list[np.ndarray | None] = [None] * len(captions)
        n_long = np.zeros(len(captions), np.int64)
        have = [i for i, c in enumerate(captions) if c]
        if have:
            enc = encode_long_texts(self.encoder, [captions[i] for i in have])
            for j, i in enumerate(have):
                out[i] = enc.vectors[j]
            n_long[have] = enc.n_chunks > 1
        return out, n_long

    def _table(self, schema: pa.Schema, infos: list[dict], vectors: np.ndarray, texts: list) -> pa.Table:
        """The rows in the table's schema (as the local engine's ``ImageRowWriter`` makes them)."""
        dim = self.dim
        mask = np.array([t is None for t in texts])
        flat = np.stack([np.zeros(dim, np.float32) if t is None else t for t in texts]).astype(np.float32)
        cols = {"id": [x["id"] for x in infos], "path": [stored_path(x["path"]) for x in infos],
                "width": [x["width"] for x in infos], "height": [x["height"] for x in infos],
                "bytes": [x["bytes"] for x in infos], "mtime": [x["mtime"] for x in infos],
                "hash": [x["hash"] for x in infos], "caption": [x["caption"] for x in infos],
                "label": [None] * len(infos), "vector": vectors_to_arrow(vectors.astype(np.float32), dim),
                "text_vector": pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), dim,
                                                                 mask=pa.array(mask))}
        for name in schema.names:
            if name not in cols:
                cols[name] = [x["meta"].get(name) for x in infos]
        return pa.table({n: cols[n] for n in schema.names}, schema=schema)
