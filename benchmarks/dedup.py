"""Near-duplicate finding on the generated benchmark with known truth (clipdex/synthetic/dedup.py), beside baselines.

    python benchmarks/dedup.py [--originals 40] [--out benchmarks/results]

Methods, all in the same run on the same files and vectors:
- ``clipdex dedup`` (k-NN candidates and perceptual-hash probe candidates, verified by content hash, pixels and
  aligned perceptual hashes; kinds), with
  its default rule ``linked`` (every member verified with most members it was checked against) and, on the same
  verdicts, ``--rule components`` (any verified pair links) and ``--rule clique``;
- CLIP threshold only, connected components at clip-retrieval's 0.94 and at Immich's default (maxDistance 0.01
  cosine distance: similarity >= 0.99);
- perceptual hash only (imagehash pHash of the whole picture, Hamming <= 10, imagededup's default for PHash).

The vectors are clipdex-tiny's (a 7 MB model trained on generated drawings): the CLIP-only baselines run on the same
vectors so that the comparison is fair, but real CLIP models score transformed copies differently, and the figures
for them need a real model. Precision and recall are over pairs (two files in one group); per transform, recall is
the share of copies grouped with their original, and candidate recall the share whose pair with the original is
among the candidates at all (k-NN or hash probes; a copy can still join its group through other copies). Hard
negatives (other drawings of the same shape and colour, the same objects in another scene) must never be grouped.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from results_io import save_result  # noqa: E402  (benchmarks/results_io.py, beside this script)

from clipdex.synthetic.dedup import make_dedup_images  # noqa: E402
from retrieval.algorithms.dedup import components  # noqa: E402
from retrieval.algorithms.dedup_image import hash_codes, plain_distance  # noqa: E402
from retrieval.index.directory import open_index  # noqa: E402
from retrieval.query.dedup import DedupOptions, find_duplicates  # noqa: E402
from retrieval.query.dedup_state import load_state  # noqa: E402


def truth(items) -> tuple[set, set, set]:
    """(same-picture pairs, exact pairs, similar pairs) of item positions."""
    same, exact, similar = set(), set(), set()
    by_group: dict[int, list[int]] = {}
    for i, it in enumerate(items):
        if it.group >= 0:
            by_group.setdefault(it.group, []).append(i)
    for members in by_group.values():
        pic = [i for i in members if items[i].role in ("original", "exact", "near")]
        same |= {frozenset(p) for p in combinations(pic, 2)}
        ex = [i for i in members if items[i].role in ("original", "exact")]
        exact |= {frozenset(p) for p in combinations(ex, 2)}
        similar |= {frozenset((s, i)) for s in members if items[s].role == "similar" for i in pic}
    return same, exact, similar


def pairs_of(groups: list[list[int]]) -> set:
    return {frozenset(p) for g in groups for p in combinations(sorted(g), 2)}


def score(predicted: set, wanted: set, allowed: set | None = None) -> dict:
    """precision (predicted pairs in ``allowed``, default ``wanted``) and recall (of ``wanted``)."""
    allowed = wanted if allowed is None else allowed
    tp = len(predicted & allowed)
    return {"pairs": len(predicted), "precision": round(tp / len(predicted), 4) if predicted else None,
            "recall": round(len(predicted & wanted) / len(wanted), 4) if wanted else None}


def per_transform(items, groups: list[list[int]]) -> dict:
    where = {i: g for g, members in enumerate(groups) for i in members}
    orig = {it.group: i for i, it in enumerate(items) if it.role == "original"}
    out: dict[str, dict] = {}
    for i, it in enumerate(items):
        if it.role in ("near", "exact"):
            key = f"{it.transform}{it.strength if it.role == 'near' else ''}"
            hit = i in where and where.get(orig[it.group]) == where[i]
            out.setdefault(key, [0, 0])
            out[key][0] += hit
            out[key][1] += 1
    return {k: round(h / n, 4) for k, (h, n) in sorted(out.items())}


def candidate_recall(items, pairs: np.ndarray, pos_of_id: dict) -> dict:
    """Per transform, the share of copies whose pair with their original is among the k-NN candidates at all (what
    verification can find directly; a copy may still join through other copies); pairs (m, 2) row ids."""
    found = {frozenset((pos_of_id[int(a)], pos_of_id[int(b)])) for a, b in pairs
             if int(a) in pos_of_id and int(b) in pos_of_id}
    orig = {it.group: i for i, it in enumerate(items) if it.role == "original"}
    out: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        if it.role in ("near", "exact"):
            key = f"{it.transform}{it.strength if it.role == 'near' else ''}"
            out.setdefault(key, [0, 0])
            out[key][0] += frozenset((i, orig[it.group])) in found
            out[key][1] += 1
    return {k: round(h / n, 4) for k, (h, n) in sorted(out.items())}


def negatives(items, groups) -> dict:
    neg = {i for i, it in enumerate(items) if it.role == "negative"}
    return {"groups_with_negatives": sum(1 for g in groups if neg & set(g)),
            "negatives_grouped": len(neg & {i for g in groups for i in g}), "negatives": len(neg)}


def evaluate(items, groups, same, exact, similar, kinds: list[str] | None = None) -> dict:
    """Figures of one method; ``kinds`` (one per group) splits ours into near/exact and similar groups."""
    strong = [g for g, k in zip(groups, kinds or ["near"] * len(groups)) if k != "similar"]
    weak = [g for g, k in zip(groups, kinds or ["near"] * len(groups)) if k == "similar"]
    out = {"near": score(pairs_of(strong), same), "per_transform_recall": per_transform(items, strong),
           "hard_negatives": negatives(items, groups), "groups": len(groups)}
    if kinds is not None:
        out["similar"] = score(pairs_of(weak), similar, similar | same)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--originals", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--min-score", type=float, default=0.2)
    ap.add_argument("--work", default="/tmp/clipdex-dedup-bench")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--keep-work", action="store_true", help="Leave the generated files and index in --work.")
    ap.add_argument("--reuse", action="store_true",
                    help="Reuse --work from a --keep-work run: the same files, the index and the saved verdicts "
                         "(re-verified when the thresholds changed).")
    a = ap.parse_args()
    work = Path(a.work)
    if not a.reuse:
        shutil.rmtree(work, ignore_errors=True)
    items = make_dedup_images(work / "img", n_originals=a.originals, seed=a.seed)
    ix_path = work / "ix.clipdex"
    t0 = time.perf_counter()
    subprocess.run(["clipdex", "index", "images", str(work / "img"), "--index", str(ix_path), "--model",
                    "clipdex-tiny", "--workers", "0"], check=True)
    t_index = time.perf_counter() - t0
    pos = {it.path: i for i, it in enumerate(items)}
    same, exact, similar = truth(items)

    t0 = time.perf_counter()
    found = find_duplicates(ix_path, DedupOptions(k=a.k, min_score=a.min_score, fresh=not a.reuse))
    t_ours = time.perf_counter() - t0
    ours = [[pos[m["path"]] for m in g["members"]] for g in found.groups]
    pred_exact = {frozenset((pos[p], pos[q])) for g in found.groups for pr in g["pairs"] if pr["kind"] == "exact"
                  for p, q in [(next(m["path"] for m in g["members"] if m["id"] == pr["a"]),
                                next(m["path"] for m in g["members"] if m["id"] == pr["b"]))]}
    results = {"clipdex dedup": {**evaluate(items, ours, same, exact, similar, [g["kind"] for g in found.groups]),
                                 "exact": score(pred_exact, exact), "seconds": round(t_ours, 2)}}
    for rule in ("components", "clique"):  # the same verdicts, reused
        other = find_duplicates(ix_path, DedupOptions(k=a.k, min_score=a.min_score, rule=rule))
        results[f"clipdex dedup --rule {rule}"] = evaluate(items, [[pos[m["path"]] for m in g["members"]]
                                                                   for g in other.groups], same, exact, similar,
                                                           [g["kind"] for g in other.groups])

    with open_index(ix_path) as ix:
        ids, x = zip(*ix.store.iter_vectors("images"))
        rows = ix.store.take("images", np.concatenate(ids), ["id", "path"]).to_pylist()
    ids, x = np.concatenate(ids), np.concatenate(x)
    path_of = {r["id"]: r["path"] for r in rows}
    with open_index(ix_path) as ix:
        state = load_state(ix_path, "images", DedupOptions(k=a.k, min_score=a.min_score).key(ix))
    cand = candidate_recall(items, state.pairs, {int(i): pos[p] for i, p in path_of.items()})
    results["clipdex dedup"]["candidate_recall"] = cand
    order = np.array([pos[path_of[int(i)]] for i in ids])
    S = x @ x.T
    for name, tau in (("CLIP >= 0.94 (clip-retrieval)", 0.94), ("CLIP >= 0.99 (Immich maxDistance 0.01)", 0.99)):
        a_, b_ = np.nonzero(np.triu(S >= tau, 1))
        groups = [list(order[g]) for g in components(np.stack([a_, b_], 1))]
        results[name] = evaluate(items, groups, same, exact, similar)

    from PIL import Image

    t0 = time.perf_counter()
    codes = hash_codes([Image.open(it.path).convert("RGB") for it in items])
    H = plain_distance(codes, codes)
    a_, b_ = np.nonzero(np.triu(H <= 10, 1))
    results["pHash <= 10 bits (imagehash)"] = {**evaluate(items, components(np.stack([a_, b_], 1)), same, exact,
                                                          similar), "seconds": round(time.perf_counter() - t0, 2)}

    result = {"files": len(items), "originals": a.originals, "model": "clipdex-tiny", "k": a.k,
              "min_score": a.min_score, "index_seconds": round(t_index, 2), "summary": found.summary,
              "methods": results,
              "note": "clipdex-tiny vectors (a tiny model trained on drawings); real CLIP numbers need a real model"}
    out = save_result(result, Path(a.out) / "dedup.json")
    plot(results, Path(a.out) / "dedup.png")
    for name, r in results.items():
        print(f"{name:42s} near P {r['near']['precision']}  R {r['near']['recall']}  "
              f"negatives grouped {r['hard_negatives']['negatives_grouped']}/{r['hard_negatives']['negatives']}")
    print("per transform (copies grouped with their original):",
          " ".join(f"{k} {v}" for k, v in results["clipdex dedup"]["per_transform_recall"].items()))
    print(f"per transform (pair with the original among the candidates, k={a.k} and hash probes):",
          " ".join(f"{k} {v}" for k, v in cand.items()))
    print(f"wrote {out}")
    if not a.keep_work:
        shutil.rmtree(work, ignore_errors=True)


def plot(results: dict, path: Path) -> None:
    import matplotlib  # optional: the dev extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional: the dev extra

    names = list(results)
    transforms = list(next(iter(results.values()))["per_transform_recall"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4.5), gridspec_kw={"width_ratios": [1, 3]})
    w = 0.8 / len(names)
    for j, n in enumerate(names):
        r = results[n]
        ax1.bar(np.arange(3) + j * w, [r["near"]["precision"] or 0, r["near"]["recall"] or 0,
                                       r["hard_negatives"]["negatives_grouped"] / r["hard_negatives"]["negatives"]],
                w, label=n)
        ax2.bar(np.arange(len(transforms)) + j * w, [r["per_transform_recall"][t] for t in transforms], w, label=n)
    ax1.set_xticks(np.arange(3) + 0.4 - w / 2, ["near precision", "near recall", "negatives grouped"])
    ax2.set_xticks(np.arange(len(transforms)) + 0.4 - w / 2, transforms, rotation=60, fontsize=8)
    ax2.set_ylabel("copies grouped with their original")
    ax1.legend(fontsize=7)
    fig.suptitle("Near-duplicates on the generated benchmark (clipdex-tiny vectors)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
