"""Classification accuracy of every method with clipdex-tiny on the generated world, through the real CLI.

    python benchmarks/tiny_classify.py [--out benchmarks/results]

Data: ``clipdex.synthetic.world_sets.make_world_classify_files`` (seed 0): 8 shape classes; a support index of 96
captioned drawings; a clean test set (filled shapes on plain backgrounds, 64 images) and a style-shifted one
(outlines on noisy backgrounds, in colours the support set does not use, 64 images); 4 shifted-style shots per
class. Runs ``clipdex classify --method all`` on both sets and writes <out>/tiny_classify.json (top-1/top-5 per
method) and prints the table.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_io import save_result  # noqa: E402  (benchmarks/results_io.py, beside this script)

from cli.main import cli  # noqa: E402
from clipdex.synthetic.world_sets import make_world_classify_files  # noqa: E402

METHODS = ("zeroshot", "susx", "xmore", "reco", "tip", "tipx", "gda", "proker")


def run(args: list[str]) -> str:
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if r.exit_code != 0:
        raise SystemExit(r.output)
    return r.stdout


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_world_classify_files(Path(tmp) / "world")
        support = Path(tmp) / "support.clipdex"
        run(["index", "images", data["support_csv"], "--index", support, "--model", "clipdex-tiny", "--workers", 0])
        result = {"model": "clipdex-tiny", "command": "python benchmarks/tiny_classify.py", "sets": {}}
        for split in ("clean", "shifted"):
            out = run(["classify", data[split], "--classes", data["classes"], "--labels", data[f"{split}_labels"],
                       "--method", "all", "--support", support, "--shots", data["shots"], "--per-class", 8, "--json"])
            acc = json.loads(out.splitlines()[-1])["summary"]["accuracy"]
            result["sets"][split] = {m: {"n": acc[m]["n"], "top1": round(acc[m]["top1"], 2),
                                         "top5": round(acc[m]["top5"], 2)} for m in METHODS}
    save_result(result, Path(a.out) / "tiny_classify.json")
    print(f"{'method':<10} {'clean top-1':>12} {'shifted top-1':>14} {'shifted top-5':>14}")
    for m in METHODS:
        c, s = result["sets"]["clean"][m], result["sets"]["shifted"][m]
        print(f"{m:<10} {c['top1']:>11.1f}% {s['top1']:>13.1f}% {s['top5']:>13.1f}%")


if __name__ == "__main__":
    main()
