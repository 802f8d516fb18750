"""Words and pictures (issue 23): vector-only, keyword-only and hybrid search on a set where the answer depends on
words, with ``clipdex eval``; how much OCR reads; what OCR costs beside the image pipeline.

    python benchmarks/hybrid.py                     # 20 queries per kind, clipdex-tiny, both backends
    python benchmarks/hybrid.py --queries 8 --throughput-images 16 --backends lance   # a quick look

1. ``clipdex.synthetic.words.make_words_set``: drawn shapes with signs, receipts and codes rendered in the
   machine's fonts (12-28 px, turned, noisy), file names and captions; four query kinds (ocr: words only in the
   picture; meta: words only in the file name or caption; visual: what the drawing shows; mixed: both), with
   look-alike distractors.
2. ``clipdex index images MANIFEST --ocr`` with ``clipdex-tiny`` (it knows drawn shapes and colours, no words:
   vector-only search is weak on words by design, which is what this measures), then ``clipdex eval retrieval
   --mode vector|text|hybrid`` (hybrid's default complete-match fusion, and ``--fusion rrf`` and ``score``):
   recall@1, recall@10 and nDCG@10 per kind, CLIP_benchmark JSON beside; how hard the look-alikes are (how many
   share the query's words, how often the picture search prefers one to the answer).
3. OCR recall: the share of rendered words (letter height >= 12 px, measured after fitting the panel in the
   picture) whose terms the OCR text holds.
4. Cost: ``clipdex index images`` images/s with ViT-B-32 (random weights, CPU) on the same pictures, against the
   OCR pass's images/s; the ratio (image pipeline + OCR) / image pipeline.

Results: benchmarks/results/hybrid.json and hybrid.png.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_io import RESULTS, save_result  # noqa: E402 - benchmarks/results_io.py, beside this script

from clipdex.synthetic.words import make_words_set  # noqa: E402
from retrieval.index.directory import open_index  # noqa: E402
from retrieval.query.hybrid import HybridOptions, hybrid_search  # noqa: E402

MODES = (("vector", []), ("text", []), ("hybrid", []), ("hybrid-rrf", ["--fusion", "rrf"]),
         ("hybrid-score", ["--fusion", "score"]))
KINDS = ("ocr", "meta", "visual", "mixed")
METRICS = ("recall@1", "recall@10", "ndcg@10")


def clipdex(*args) -> str:
    out = subprocess.run([sys.executable, "-m", "cli.main", *map(str, args)], cwd=ROOT, capture_output=True,
                         text=True)
    if out.returncode:
        raise SystemExit(f"clipdex {' '.join(map(str, args))} failed:\n{out.stderr}")
    return out.stdout


def index(manifest: str, ix: Path, model: str, backend: str, ocr: bool) -> dict:
    args = ["index", "images", manifest, "--index", ix, "--model", model, "--backend", backend, "--json"]
    return json.loads(clipdex(*args, *(["--ocr"] if ocr else [])).strip().splitlines()[-1])


def evaluate(ix: Path, queries: str, out: Path) -> dict:
    res = {}
    for name, extra in MODES:
        mode = name.split("-")[0]
        lines = clipdex("eval", "retrieval", ix, queries, "--mode", mode, *extra, "--json", "--output",
                        out / f"clip_benchmark_{name}.json").strip().splitlines()
        s = json.loads(lines[-1])["summary"]
        res[name] = {"all": {m: s[m] for m in METRICS},
                     **{k: {m: s["kinds"][k][m] for m in METRICS} for k in KINDS}}
    return res


def hardness(ix: Path, queries: list[dict]) -> dict:
    """Per kind: the share of queries whose keyword top 10 holds a wrong picture carrying some of the query's terms
    (a look-alike sharing its words), and the share where the vector ranking puts such a look-alike above the
    answer (what fusion by ranks alone falls for)."""
    out = {}
    with open_index(ix) as opened:
        for kind in ("ocr", "meta", "mixed"):
            shares = prefers = n = 0
            for q in (q for q in queries if q["kind"] == kind):
                n += 1
                text = hybrid_search(opened, q["query"], k=10, options=HybridOptions("text", explain=True))
                rel = {p.split("/")[-1] for p in q["relevant"]}
                lookalikes = [(r["id"], len(r["matched"])) for r in text.to_pylist()
                              if r["path"].split("/")[-1] not in rel]
                near = {i for i, m in lookalikes if m}
                shares += bool(near)
                vec = hybrid_search(opened, q["query"], k=len(queries) * 8, options=HybridOptions("vector"))
                order = [(r["id"], r["path"].split("/")[-1] in rel) for r in vec.to_pylist()]
                first_rel = next((j for j, (_, hit) in enumerate(order) if hit), len(order))
                prefers += any(i in near for i, _ in order[:first_rel])
            out[kind] = {"queries": n, "lookalike_shares_words": round(shares / n, 3) if n else None,
                         "vector_prefers_lookalike": round(prefers / n, 3) if n else None}
    return out


def ocr_recall(ix: Path, items: list[dict], folder: Path) -> dict:
    """Share of rendered words found, by letter height (all, >= 12 px, < 12 px)."""
    with open_index(ix) as opened:
        read = {p: t for b in opened.store.scan("ocr", ["path", "text"])
                for p, t in zip(b.column(0).to_pylist(), b.column(1).to_pylist())}
    found = {"all": [0, 0], ">=12px": [0, 0], "<12px": [0, 0]}
    for it in items:
        text = read.get(str(folder / it["path"])) or ""
        flat = "".join(c for c in text.lower() if c.isalnum())  # OCR may drop the spaces between words
        for line in it["lines"]:
            for word in line.split():
                hit = "".join(c for c in word.lower() if c.isalnum()) in flat  # its letters, in order
                for key in ("all", ">=12px" if it["px"] >= 12 else "<12px"):
                    found[key][0] += hit
                    found[key][1] += 1
    return {k: {"words": n, "found": f, "recall": round(f / n, 4) if n else None} for k, (f, n) in found.items()}


def throughput(manifest_items: list[dict], folder: Path, n: int, work: Path) -> dict:
    """Image pipeline (ViT-B-32, random weights, CPU) vs the OCR pass on the same ``n`` pictures."""
    sub = work / "cost"
    (sub / "pictures").mkdir(parents=True)
    for it in manifest_items[:n]:
        (sub / it["path"]).write_bytes((folder / it["path"]).read_bytes())
    with_text = sum(1 for it in manifest_items[:n] if it["lines"])
    s = index(str(sub / "pictures"), work / "cost.clipdex", "random:ViT-B-32", "lance", ocr=True)
    img_s, ocr_s = s["elapsed"], s["ocr"]["elapsed"]
    return {"images": n, "with_text": with_text, "image_pipeline_images_per_s": round(s["images_per_s"], 2),
            "ocr_images_per_s": round(s["ocr"]["images_per_s"], 2),
            "cost_ratio": round((img_s + ocr_s) / img_s, 2) if img_s else None,
            "note": "model load and index creation excluded from the image pipeline's time; the OCR engine's load "
                    "is inside the OCR pass"}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backend = next(iter(results))
    res = results[backend]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, metric in zip(axes, ("recall@1", "ndcg@10")):
        width = 0.8 / len(MODES)
        for j, (name, _) in enumerate(MODES):
            vals = [res[name][k][metric] for k in KINDS]
            ax.bar([i + j * width for i in range(len(KINDS))], vals, width, label=name)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(KINDS))], KINDS)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{metric} per query kind ({backend}, clipdex-tiny)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=20, help="queries per kind")
    ap.add_argument("--backends", default="lance,faiss")
    ap.add_argument("--throughput-images", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = make_words_set(work / "set", n_queries=args.queries, seed=args.seed)
        results, indexing, recall, hard = {}, {}, None, None
        for backend in args.backends.split(","):
            ix = work / f"words-{backend}.clipdex"
            indexing[backend] = index(data["manifest"], ix, "clipdex-tiny", backend, ocr=True)
            results[backend] = evaluate(ix, data["queries_path"], work)
            if recall is None:
                recall = ocr_recall(ix, data["items"], work / "set")
                hard = hardness(ix, data["queries"])
                clip_benchmark = json.loads((work / "clip_benchmark_hybrid.json").read_text())
            print(backend, json.dumps(results[backend]["hybrid"]["all"]), file=sys.stderr)
        cost = throughput(data["items"], work / "set", args.throughput_images, work) if args.throughput_images else None
    result = {"model": "clipdex-tiny", "queries_per_kind": args.queries, "pictures": len(data["items"]),
              "seed": args.seed, "results": results, "distractors": hard, "ocr_recall": recall, "cost": cost,
              "indexing": {b: {"images_per_s": round(s["images_per_s"], 2), "ocr": s["ocr"]}
                           for b, s in indexing.items()},
              "clip_benchmark_hybrid": clip_benchmark,
              "note": "clipdex-tiny knows drawn shapes and colours and no words: vector-only search is weak on word "
                      "queries by design; the keyword side reads paths, captions and OCR text."}
    out = save_result(result, name="hybrid")
    plot(results, RESULTS / "hybrid.png")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
