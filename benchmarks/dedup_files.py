"""``clipdex dedup`` on a folder of image files, end to end, as a user runs it: what each stage costs per file.

    python benchmarks/dedup_files.py --images 2000 [--side 512] [--copies 0.02] [--shards 1000]

Files: ``--images`` distinct generated scenes (``clipdex.synthetic.world``: 1-3 objects on a plain or textured
ground; many of them alike, as drawings of the same objects are), saved as ``--side`` px JPEGs, and for a fraction
``--copies`` of them a transformed copy (``clipdex.synthetic.dedup.TRANSFORMS``: re-encoded, resized, cropped,
turned, recoloured, watermarked or framed like a screenshot, at a random strength). Then, each in its own process
under ``/usr/bin/time -v``: ``clipdex index images`` (clipdex-tiny; the probe codes taken as each file is decoded)
and ``clipdex dedup --json`` (defaults: k 10, min score 0.5). Reported: wall and CPU seconds and peak memory of
each, dedup's counts (candidates, pairs refused by their probe codes without decoding, verified), the planted
copies grouped with their original, and groups that hold no planted pair (alike scenes called duplicates).

Measured (2 cores, results/dedup_files_2000.json): 2,038 files indexed in 15 s; dedup 927 s (455 ms a file, 1,704
CPU-seconds) for 18,450 candidate pairs; 37 of the 38 copies grouped with their original, and 69 groups of merely
alike scenes (31 near, 38 similar; 81 before the hue rule, 70 before the colour rule): pale, outlined or two-tone
drawings pass the grey tone curve.

``--shards N`` packs the same files into webdataset tars of N samples and indexes those instead: dedup then reads
each picture back from its tar by key (``retrieval.io.shard_members``), and the groups must be the files' own.

Results: benchmarks/results/dedup_files_<images>[_shards].json. The work folder is deleted unless ``--keep``.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.dedup_scale import timed  # noqa: E402
from benchmarks.results_io import RESULTS, save_result  # noqa: E402
from clipdex.synthetic.dedup import TRANSFORMS  # noqa: E402
from clipdex.synthetic.world import render_scene, sample_scene  # noqa: E402
from retrieval.query.dedup import DedupOptions, find_duplicates  # noqa: E402


def write_files(folder: Path, n: int, side: int, copies: float, seed: int = 0) -> dict[str, str]:
    """The pictures, and {copy path: original path} of the planted copies."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    planted = {}
    names = sorted(TRANSFORMS)
    for i in range(n):
        img = render_scene(sample_scene(rng), 128, seed=rng.randrange(1 << 30)).resize((side, side), 3)
        path = folder / f"{i // 1000:04d}" / f"p{i:07d}.jpg"
        path.parent.mkdir(exist_ok=True)
        img.save(path, quality=90)
        if rng.random() < copies:
            name = rng.choice(names)
            out = TRANSFORMS[name](img, rng.randrange(3), rng)
            copy = path.with_name(f"p{i:07d}-{name}.jpg")
            out.convert("RGB").save(copy, quality=90)
            planted[str(copy)] = str(path)
    return planted


def pack_shards(folder: Path, out: Path, per_shard: int) -> dict[str, str]:
    """The files of ``folder`` packed in order into webdataset tars of ``per_shard`` samples under ``out`` (key: the
    file's path in the folder without its extension) -> {file path: its sample's path, ``SHARD#KEY``}."""
    files = sorted(folder.rglob("*.jpg"))
    out.mkdir(parents=True, exist_ok=True)
    sample_of = {}
    for s in range(0, len(files), per_shard):
        shard = (out / f"{s // per_shard:05d}.tar").resolve()
        with tarfile.open(shard, "w") as tar:
            for f in files[s:s + per_shard]:
                key = str(f.relative_to(folder).with_suffix(""))
                tar.add(f, arcname=key + ".jpg")
                sample_of[str(f)] = f"{shard}#{key}"
    return sample_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--copies", type=float, default=0.02)
    ap.add_argument("--work", type=Path, default=Path("/tmp/clipdex-dedup-files"))
    ap.add_argument("--nice", type=int, default=0)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--shards", type=int, default=0, help="index webdataset tars of this many samples, not files")
    a = ap.parse_args()
    work = a.work / f"n{a.images}"
    folder, ix = work / "img", work / "ix.clipdex"
    known = work / "planted.json"
    if known.exists():
        planted = json.loads(known.read_text())
    else:
        planted = write_files(folder, a.images, a.side, a.copies)
        known.write_text(json.dumps(planted))
    source = folder
    if a.shards:
        shutil.rmtree(work / "tars", ignore_errors=True)
        sample_of = pack_shards(folder, work / "tars", a.shards)
        planted = {sample_of[c]: sample_of[o] for c, o in planted.items()}
        source, ix = work / "tars", work / "ix-shards.clipdex"
    shutil.rmtree(ix, ignore_errors=True)
    clipdex = [sys.executable, "-m", "cli.main"]
    index_s, index_rss, index_out = timed([*clipdex, "index", "images", str(source), "--index", str(ix),
                                           "--model", "clipdex-tiny", "--json"], a.nice)
    dedup_s, dedup_rss, dedup_out = timed([*clipdex, "dedup", str(ix), "--json"], a.nice)
    cpu = lambda out: float(out.rsplit("cpu_seconds", 1)[1].split()[0])  # noqa: E731
    result = find_duplicates(ix, DedupOptions())   # the groups of the run just timed, from its saved state
    groups = result.groups
    group_of = {m["path"]: g for g, grp in enumerate(groups) for m in grp["members"]}
    found = sum(1 for c, o in planted.items() if c in group_of and group_of[c] == group_of.get(o))
    with_planted = {group_of[c] for c, o in planted.items() if c in group_of and group_of[c] == group_of.get(o)}
    stray = [g for g in range(len(groups)) if g not in with_planted]
    files = a.images + len(planted)
    out = {
        "files": files, "source": f"webdataset tars of {a.shards} samples" if a.shards else "files",
        "side": a.side, "planted_copies": len(planted), "model": "clipdex-tiny",
        "index_s": round(index_s, 1), "index_cpu_s": round(cpu(index_out), 1), "index_peak_rss_mb": index_rss >> 20,
        "dedup_s": round(dedup_s, 1), "dedup_cpu_s": round(cpu(dedup_out), 1), "dedup_peak_rss_mb": dedup_rss >> 20,
        "dedup_ms_per_file": round(1000 * dedup_s / files, 2),
        "summary": result.summary, "planted_grouped_with_original": found,
        "groups_without_a_planted_pair": len(stray),
        "stray_group_kinds": sorted({groups[g]["kind"] for g in stray}),
    }
    print(json.dumps(out, indent=1))
    name = f"dedup_files_{a.images}{'_shards' if a.shards else ''}.json"
    print(f"wrote {save_result(out, RESULTS / name)}")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
