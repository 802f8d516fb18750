"""Per-stage rates of the distributed path, each measured alone in this process on one core (issue 22):

    python benchmarks/ray_stages.py                 # about 2 minutes on a quiet core
    python benchmarks/ray_stages.py --quick         # smaller sizes, for a check that it runs

- decode: read a webdataset shard and decode + crop each sample (``read_shard`` + ``decode_sample``, the Ray
  tasks' work), drawn JPEGs of ``--size`` px (img2dataset's usual 256), samples/s;
- embed: ViT-B-32 with random weights (the real architecture's cost), images (224 px, prepared) and their captions
  (``encode_long_texts``), torch on one thread, samples/s;
- write: rows of the ``images`` table (512-d vector and text_vector, metadata) written as Lance fragments
  (``lance_fragments.write_rows``, the actors' work), rows/s and MB/s;
- commit: one Lance Append of ``k`` fragments (``commit_fragments``, the driver's work) for k = 1, 16, 64: seconds;
- index encode: rows added to a trained copy of the 400M plan's structure at a smaller nlist (IVF{nlist},
  PQ64x4fs,Refine(SQfp16) on 512-d; the Ray tasks' work in ``optimize --engine ray``), for two nlist values so the
  coarse assignment's share (linear in nlist) can be extrapolated, rows/s;
- merge: copies of that index merged into one (``retrieval.ann.merge.merge_into``, the driver's work), rows/s.

The load average is recorded before and after: the machine's cores are shared, so every wall-clock rate is a floor;
each stage's CPU seconds (``time.process_time``, every thread of this process) give its rate per CPU-second too,
what a core gives when it is not shared (Lance's writer uses more than one thread: its per-CPU rate is the
fairer one). Writes
benchmarks/results/ray_stages.json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from results_io import save_result  # noqa: E402  (benchmarks/results_io.py, beside this script)

from clipdex.synthetic.embeddings import clustered  # noqa: E402 - after the path setup
from clipdex.synthetic.shards import make_shards  # noqa: E402
from indexers.shards import IDENTITY, decode_sample  # noqa: E402
from retrieval.ann import structures  # noqa: E402
from retrieval.ann.merge import from_bytes, merge_into, to_bytes  # noqa: E402
from retrieval.encode.encoder import load_encoder  # noqa: E402
from retrieval.encode.text import encode_long_texts  # noqa: E402
from retrieval.index.directory import create_index  # noqa: E402
from retrieval.io.shards import discover_shards, read_shard  # noqa: E402
from retrieval.store.base import vectors_to_arrow  # noqa: E402
from retrieval.store.lance_fragments import commit_fragments, table_schema, write_rows  # noqa: E402

D = 512


CPU: dict[str, float] = {}  # stage -> CPU seconds of this process (every thread) spent in it


def timed(fn, *args, stage: str = "") -> tuple[float, object]:
    """(wall seconds, result) of ``fn(*args)``; its CPU seconds are added to ``CPU[stage]``."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    CPU[stage] = CPU.get(stage, 0.0) + time.process_time() - c0
    return time.perf_counter() - t0, out


def per_cpu(n: int, stage: str) -> float:
    """Items per CPU-second of ``stage``: what a core gives when it is not shared."""
    return round(n / max(CPU.get(stage, 0.0), 1e-9), 1)


def decode_rate(work: Path, n: int, size: int, prep) -> dict:
    make_shards(work / "shards", n_shards=1, per_shard=n, failed_per_shard=0, size=size)
    shard = discover_shards([str(work / "shards")]).shards[0]
    samples = list(read_shard(shard))  # read once so the page cache holds the tar

    def run():
        return [decode_sample(s.key, s.image, prep) for s in read_shard(shard)]

    seconds, out = timed(run, stage="decode")
    return {"samples": len(samples), "size_px": size, "seconds": round(seconds, 2),
            "samples_per_s": round(len(out) / seconds, 1), "samples_per_cpu_s": per_cpu(len(out), "decode"),
            "shard_bytes": shard.bytes}


def embed_rate(n: int, prep) -> dict:
    import torch  # heavy: one thread, as one Ray actor with cpus_per_actor=1

    torch.set_num_threads(1)
    enc = load_encoder("random:ViT-B-32", device="cpu")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (n, *enc.prep.size, 3), dtype=np.uint8)
    captions = [f"a photo of a red square number {i} on a grey background, drawn for a test" for i in range(n)]
    enc.encode_prepared(pixels[:2])  # warm-up
    t_img, _ = timed(enc.encode_prepared, pixels, stage="embed_image")
    t_txt, _ = timed(encode_long_texts, enc, captions, stage="embed_caption")
    cpu = CPU["embed_image"] + CPU["embed_caption"]
    return {"samples": n, "image_s": round(t_img, 2), "caption_s": round(t_txt, 2),
            "images_per_s": round(n / t_img, 2), "captions_per_s": round(n / t_txt, 1),
            "samples_per_s": round(n / (t_img + t_txt), 2), "images_per_cpu_s": per_cpu(n, "embed_image"),
            "captions_per_cpu_s": per_cpu(n, "embed_caption"), "samples_per_cpu_s": round(n / cpu, 2)}


def write_commit_rates(work: Path, rows: int) -> dict:
    with create_index(work / "ix", dim=D, model="none") as ix:
        ix.ensure_table("images", IDENTITY)
        root = str(ix.store.root)
    schema = table_schema(root, "images")
    x = clustered(rows, D, seed=1).astype(np.float32)
    cols = {"id": np.arange(rows), "vector": vectors_to_arrow(x, D), "text_vector": vectors_to_arrow(x[::-1], D),
            "path": [f"/data/shard-{i // 10000:05d}.tar#{i:09d}.jpg" for i in range(rows)],
            "caption": [f"a caption of about sixty characters for sample number {i}" for i in range(rows)]}
    table = pa.table({n: cols[n] if n in cols else pa.nulls(rows, schema.field(n).type) for n in schema.names},
                     schema=schema)
    nbytes = table.nbytes
    seconds, frags = timed(write_rows, root, "images", table, stage="write")
    out = {"rows": rows, "table_mb": round(nbytes / 1e6, 1), "write_s": round(seconds, 2),
           "write_rows_per_s": round(rows / seconds), "write_mb_per_s": round(nbytes / 1e6 / seconds, 1),
           "write_rows_per_cpu_s": per_cpu(rows, "write"), "bytes_on_disk": _size(Path(root) / "images.lance")}
    small = table.slice(0, 64)
    commits = {}
    for k in (1, 16, 64):
        pieces = [f for _ in range(k) for f in write_rows(root, "images", small)]
        seconds, _ = timed(commit_fragments, root, "images", pieces)
        commits[str(k)] = round(seconds, 3)
    seconds, _ = timed(commit_fragments, root, "images", frags)
    out.update(commit_s_by_fragments=commits, commit_big_s=round(seconds, 3))
    return out


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def encode_merge_rates(rows: int, nlists: tuple[int, ...], parts: int) -> dict:
    x = clustered(rows, D, clusters=400, seed=2).astype(np.float32)
    ids = np.arange(rows, dtype=np.int64)
    out = {"rows": rows, "parts": parts, "by_nlist": {}}
    for nlist in nlists:
        factory = f"IVF{nlist},PQ64x4fs,Refine(SQfp16)"
        train_s, empty = timed(structures.build_index, factory, D, x[: max(40 * nlist, 10_000)], [])
        blob = to_bytes(empty)
        copies, add_s = [], 0.0
        for a in range(0, rows, rows // parts):
            part = from_bytes(blob)
            seconds, _ = timed(part.add_with_ids, x[a:a + rows // parts], ids[a:a + rows // parts],
                               stage=f"encode{nlist}")
            add_s += seconds
            copies.append(part)
        merged = copies[0]
        merge_s = sum(timed(merge_into, merged, c, stage=f"merge{nlist}")[0] for c in copies[1:])
        out["by_nlist"][str(nlist)] = {"factory": factory, "train_s": round(train_s, 1), "add_s": round(add_s, 2),
                                       "encode_rows_per_s": round(rows / add_s),
                                       "encode_rows_per_cpu_s": per_cpu(rows, f"encode{nlist}"),
                                       "merge_s": round(merge_s, 3),
                                       "merge_rows_per_s": round((rows - rows // parts) / merge_s),
                                       "merge_rows_per_cpu_s": per_cpu(rows - rows // parts, f"merge{nlist}"),
                                       "merged_rows": int(merged.ntotal)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a check that the script runs")
    ap.add_argument("--size", type=int, default=256, help="drawn image side in pixels")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch  # heavy: every stage on one thread

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    import faiss  # heavy: one thread, a core's rate

    faiss.omp_set_num_threads(1)
    q = args.quick
    work = Path(tempfile.mkdtemp(prefix="ray_stages_"))
    load0 = os.getloadavg()
    try:
        prep = load_encoder("random:ViT-B-32", device="cpu").prep
        result = {"decode": decode_rate(work, 32 if q else 200, args.size, prep),
                  "embed": embed_rate(4 if q else 24, prep),
                  "write_commit": write_commit_rates(work, 5_000 if q else 50_000),
                  "index_encode_merge": encode_merge_rates(20_000 if q else 100_000, (64, 256) if q else (256, 1024),
                                                           4)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.update(threads=1, load_average_before=[round(v, 1) for v in load0],
                  load_average_after=[round(v, 1) for v in os.getloadavg()])
    path = save_result(result, name="ray_stages_quick" if q else "ray_stages")
    print(path)
    for stage, figures in result.items():
        print(stage, figures)


if __name__ == "__main__":
    main()
