"""What the perceptual-hash candidates of ``clipdex dedup`` cost at scale: coding images (decode + probe codes) and
the multi-index-hashing join of the codes of N images.

    python benchmarks/dedup_probes.py [--images 1000000] [--coded 400]

1. Coding: ``--coded`` generated drawings (clipdex/synthetic/dedup.py) as 128 px PNGs and as 1,600 px JPEGs (a phone
   photo's scale; decoded drafted, as ``dedup`` does), coded by ``retrieval.query.dedup_hashes.code_rows``'s per-file
   step on this machine's cores: images per second.
2. Join: the probe codes of those drawings, tiled to ``--images`` images, each tile's codes with 10-20 random bits
   flipped (so that tiles are not duplicates of each other, yet as clustered as drawings' codes are), joined as a
   first run joins them (every view against every anchor), with one-bit-flip lookups (the default up to
   ``FLIP_CODES`` anchor codes) and exact ones (beyond): wall time and candidate pairs.

Results: benchmarks/results/dedup_probes.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.results_io import RESULTS, save_result  # noqa: E402
from clipdex.synthetic.dedup import make_dedup_images  # noqa: E402
from retrieval.algorithms.dedup import ImageThresholds  # noqa: E402
from retrieval.algorithms.hamming import hamming_join  # noqa: E402
from retrieval.query.dedup_hashes import FLIP_CODES, probe_file  # noqa: E402


def coding_rate(paths: list[str]) -> float:
    """Images per second, coded on this machine's cores as a dedup run codes them."""
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        t = time.perf_counter()
        got = list(pool.map(probe_file, [{"path": p} for p in paths]))
        dt = time.perf_counter() - t
    assert all(g is not None for g in got)
    return len(paths) / dt


def tiled(codes: list[tuple[np.ndarray, np.ndarray]], n: int, seed: int = 0):
    """(views, view_owner, anchors, anchor_owner) of ``n`` images: the given images' codes, tile by tile, each
    tile's codes with 10-20 bits flipped per 64-bit code (one mask per image and hash, the same for its views and
    anchors, so that an image's own views still match its anchors)."""
    rng = np.random.default_rng(seed)
    base_v = [v for v, _ in codes]
    base_a = [a for _, a in codes]
    views, vo, anchors, ao = [], [], [], []
    for i in range(n):
        j = i % len(codes)
        mask = np.zeros(2, np.uint64)
        if i >= len(codes):
            for col in range(2):
                for b in rng.choice(64, int(rng.integers(10, 21)), replace=False):
                    mask[col] |= np.uint64(1) << np.uint64(int(b))
        views.append(base_v[j] ^ mask)
        anchors.append(base_a[j] ^ mask)
        vo.append(np.full(len(base_v[j]), i, np.int64))
        ao.append(np.full(len(base_a[j]), i, np.int64))
    return np.concatenate(views), np.concatenate(vo), np.concatenate(anchors), np.concatenate(ao)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1_000_000)
    ap.add_argument("--coded", type=int, default=400)
    ap.add_argument("--work", type=Path, default=Path("/tmp/clipdex-dedup-probes"))
    a = ap.parse_args()
    items = make_dedup_images(a.work / "png", n_originals=max(1, a.coded // 28), seed=0)[:a.coded]
    pngs = [it.path for it in items]
    big = a.work / "jpg"
    big.mkdir(parents=True, exist_ok=True)
    jpgs = []
    for p in pngs:
        out = big / (Path(p).stem + ".jpg")
        Image.open(p).convert("RGB").resize((1600, 1200), Image.BICUBIC).save(out, quality=90)
        jpgs.append(str(out))
    rates = {"png_128px_per_s": round(coding_rate(pngs), 1), "jpeg_1600px_per_s": round(coding_rate(jpgs), 1)}
    print(f"coding: {rates}")
    codes = [c for c in (probe_file({"path": p}) for p in pngs) if c is not None]
    t = ImageThresholds()
    joins = []
    for n in sorted({min(a.images, 100_000), a.images}):
        v, vo, an, ao = tiled(codes, n)
        for flips in (1, 0):
            if flips and len(an) > FLIP_CODES:
                continue   # dedup looks up exactly past FLIP_CODES (the flipped lookups grow as n squared)
            start = time.perf_counter()
            got = hamming_join(v, vo, an, ao, t.probe_bits, t.probe_both, flips=flips)
            row = {"images": n, "views": len(v), "anchors": len(an), "flips": flips,
                   "seconds": round(time.perf_counter() - start, 1), "pairs": len(got.pairs),
                   "crowded_lookups": got.crowded}
            print(row)
            joins.append(row)
    result = {"coding": rates, "joins": joins, "flip_codes": FLIP_CODES,
              "note": "codes of generated drawings, tiled with 10-20 bits flipped per code: as clustered as "
                      "drawings' codes; real photos' codes spread more, so buckets are smaller"}
    print(f"wrote {save_result(result, RESULTS / 'dedup_probes.json')}")


if __name__ == "__main__":
    main()
