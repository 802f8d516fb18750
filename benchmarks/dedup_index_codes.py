"""What taking ``clipdex dedup``'s probe codes at index time costs the indexer, and what it saves dedup.

    python benchmarks/dedup_index_codes.py [--images 2000] [--side 1600]

Files: ``--images`` generated pictures (clipdex/synthetic/dedup.py: originals, copies, hard negatives) saved as
``--side`` x 3/4 JPEGs (1,600 px: a phone photo's scale). The same files are indexed twice with clipdex-tiny, each
into a fresh index: with the codes (the default) and with ``--no-dedup-codes``. Then the hash step of a first
dedup run (``retrieval.query.dedup_hashes.hash_candidates``) runs on each index: with the indexer's codes it
merges them and joins; without, it decodes and codes every file first. Reported: the indexer's images per second,
the hash step's seconds, and that both give the same candidate pairs.

clipdex-tiny is the worst case for the indexer's extra cost (its encoder is the cheapest there is); with ViT-B-32 on
a CPU the encoder alone takes about 60 ms an image (``benchmarks/results/index_throughput.json``).

Results: benchmarks/results/dedup_index_codes.json.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.results_io import RESULTS, save_result  # noqa: E402
from clipdex.synthetic.dedup import make_dedup_images  # noqa: E402
from indexers.images import ImageIndexOptions, index_images  # noqa: E402
from retrieval.algorithms.dedup import ImageThresholds  # noqa: E402
from retrieval.index.directory import create_index, open_index  # noqa: E402
from retrieval.io.sources import IMAGE_EXTENSIONS, discover  # noqa: E402
from retrieval.query.dedup_hashes import hash_candidates  # noqa: E402
from retrieval.query.dedup_state import DedupState  # noqa: E402


def pictures(work: Path, n: int, side: int) -> Path:
    out = work / f"jpg{side}"
    if out.is_dir() and len(list(out.glob("*.jpg"))) >= n:
        return out
    items = make_dedup_images(work / "png", n_originals=max(1, n // 28 + 1), seed=0)[:n]
    out.mkdir(parents=True, exist_ok=True)
    for it in items:
        Image.open(it.path).convert("RGB").resize((side, side * 3 // 4), Image.BICUBIC).save(
            out / (Path(it.path).stem + ".jpg"), quality=90)
    return out


def run(files: Path, ix_path: Path, codes: bool) -> dict:
    shutil.rmtree(ix_path, ignore_errors=True)
    ix = create_index(ix_path, model="clipdex-tiny")
    found = discover([str(files)], IMAGE_EXTENSIONS)
    t = time.perf_counter()
    summary = index_images(ix, found, ImageIndexOptions(optimize=False, probe_codes=codes))
    index_s = time.perf_counter() - t
    ix.close()
    ix = open_index(ix_path)
    live = np.sort(np.asarray(ix.store.take("images", np.arange(ix.store.max_id("images") + 1), ["id"])
                              .column("id").to_numpy(), np.int64))
    state = DedupState(key={})
    t = time.perf_counter()
    pairs = hash_candidates(ix, state, live, ImageThresholds(), lambda progress: None)
    hash_s = time.perf_counter() - t
    ix.close()
    return {"codes_at_index_time": codes, "images": summary.added, "index_s": round(index_s, 1),
            "index_images_per_s": round(summary.added / index_s, 1), "dedup_hash_step_s": round(hash_s, 2),
            "candidate_pairs": int(pairs), "pairs": {tuple(p) for p in state.pairs.tolist()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--side", type=int, default=1600)
    ap.add_argument("--work", type=Path, default=Path("/tmp/clipdex-dedup-index-codes"))
    a = ap.parse_args()
    files = pictures(a.work, a.images, a.side)
    runs = [run(files, a.work / f"ix-{codes}", codes) for codes in (False, True)]
    same = runs[0].pop("pairs") == runs[1].pop("pairs")
    without, with_codes = runs
    result = {
        "command": f"python benchmarks/dedup_index_codes.py --images {a.images} --side {a.side}",
        "files": f"{a.images} JPEGs, {a.side} x {a.side * 3 // 4} px", "model": "clipdex-tiny",
        "cores": os.cpu_count(), "runs": runs, "same_candidate_pairs": same,
        "indexer_cost_per_image_ms": round(1000 * (with_codes["index_s"] - without["index_s"]) / a.images, 2),
        "dedup_saved_per_image_ms": round(
            1000 * (without["dedup_hash_step_s"] - with_codes["dedup_hash_step_s"]) / a.images, 2),
    }
    print(result)
    print(f"wrote {save_result(result, RESULTS / 'dedup_index_codes.json')}")


if __name__ == "__main__":
    main()
