"""Compare clipdex's classification methods on a synthetic CLIP-like problem.

    python benchmarks/classify_compare.py [--quick] [--seed 0] [--out benchmarks/results]

Runs, on embeddings from :func:`clipdex.synthetic.embeddings.make_clip_like` (no model, no network):
  name-only  zero-shot (100 f W); SuS-X (SuS-LC support set from the synthetic web corpus, then TIP-X with the
             fixed DEFAULT_TIPX, and with TIP-X searched on the labelled val split); X-MoRe (image->image
             retrieval of captions, stream and batch fusion); RECO (training-free mean fusion, and trained fusers);
  few-shot   Tip-Adapter (paper grid search), TIP-X with the real shots (coarse grid), GDA (alpha searched), ProKeR
             (ImageNet defaults).
Prints a table, writes <out>/classify_compare.json and <out>/classify_compare.png. The synthetic generator's
parameters (recorded in the JSON) set the regime; nothing here is tuned per method on test labels.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_io import save_result  # noqa: E402  (benchmarks/results_io.py, beside this script)

from clipdex.synthetic.embeddings import make_clip_like  # noqa: E402
from retrieval.algorithms import (  # noqa: E402
    DEFAULT_TIPX,
    dedup_rerank_captions,
    gda_fit,
    gda_logits,
    gda_search_alpha,
    proker_logits,
    sus_lc_select,
    tip_adapter_logits,
    tip_adapter_search,
    tipx_logits,
    tipx_search,
    xmore_caption_logits,
    xmore_image_logits,
    xmore_predict_batch,
    xmore_predict_stream,
    zeroshot_logits,
)
from retrieval.algorithms.arrays import accuracy, l2_normalize, one_hot  # noqa: E402
from retrieval.algorithms.reco import knn_ids, reco_mean_fuse, reco_refine, train_reco  # noqa: E402

CONFIGS = {
    # sizes only; the regime (noise, misalignment, captions) is the generator's defaults
    "quick": dict(data=dict(num_classes=20, n_test=1000, n_support=4000, n_shots=16), per_class=50,
                  tipx_steps=(5, 20, 5), reco_epochs=3, reco_train_pairs=2000),
    "default": dict(data=dict(num_classes=40, n_test=2000, n_support=10000, n_shots=16), per_class=100,
                    tipx_steps=(10, 50, 10), reco_epochs=3, reco_train_pairs=3000),
}
RECO_K = 10
RECO_WEIGHT = 1.0
XMORE_RETRIEVE, XMORE_K = 128, 16


def run(config: str, seed: int) -> dict:
    cfg = CONFIGS[config]
    t0 = time.perf_counter()
    d = make_clip_like(seed=seed, **cfg["data"])
    W, C = d.clip_weights, d.clip_weights.shape[1]
    x, y = d.test_feats, d.test_labels
    rows: list[dict] = []

    def add(method: str, regime: str, logits: np.ndarray, started: float, **info):
        rows.append(dict(method=method, regime=regime, acc=100 * accuracy(logits, y),
                         seconds=round(time.perf_counter() - started, 2), **info))

    t = time.perf_counter()
    add("zero-shot", "name-only", zeroshot_logits(x, W), t)

    # SuS-X: SuS-LC support set by text->image search over the web corpus, then TIP-X
    t = time.perf_counter()
    s_idx, s_lab = sus_lc_select([q[None] for q in d.class_query_embs], d.support_image_embs,
                                 per_class=cfg["per_class"])
    s_feats, s_onehot = d.support_image_embs[s_idx], one_hot(s_lab, C)
    precision = float(np.mean(d.support_labels[s_idx] == s_lab))
    add("SuS-X (TIP-X, fixed defaults)", "name-only", tipx_logits(x, s_feats, s_onehot, W, **DEFAULT_TIPX), t,
        support=len(s_idx), support_precision=round(precision, 3), params=DEFAULT_TIPX)
    t = time.perf_counter()
    hp = tipx_search(d.val_feats, d.val_labels, s_feats, s_onehot, W, search_step=cfg["tipx_steps"])
    ref = d.val_feats @ s_feats.T  # the reference rescales test KL into the validation affinity's range
    add("SuS-X (TIP-X, searched on val)", "name-only + val labels",
        tipx_logits(x, s_feats, s_onehot, W, hp["alpha"], hp["beta"], hp["gamma"], ref_affinity=ref), t, params=hp)

    # X-MoRe: image->image search, captions deduplicated and re-ranked, first K used
    t = time.perf_counter()
    nb = knn_ids(x, d.support_image_embs, XMORE_RETRIEVE)
    caps = np.stack([d.support_caption_embs[nb[i][dedup_rerank_captions(x[i], d.support_caption_embs[nb[i]],
                                                                        k=XMORE_K)]] for i in range(len(x))])
    zi, zc = xmore_image_logits(x, W.T), xmore_caption_logits(caps, W.T)
    add("X-MoRe (stream)", "name-only + corpus", xmore_predict_stream(zi, zc), t)
    add("X-MoRe (batch)", "name-only + corpus", xmore_predict_batch(zi, zc), t)

    # RECO: uni-modal search, cross-modal fusion
    t = time.perf_counter()
    mem_img, mem_txt = d.support_image_embs, d.support_caption_embs
    img_nb = knn_ids(x, mem_img, RECO_K)  # test image -> memory images -> their captions
    cls_nb = knn_ids(W.T, mem_txt, RECO_K)  # class text -> memory texts -> their images
    v_bar = reco_mean_fuse(x, mem_txt[img_nb], RECO_WEIGHT)
    t_bar = reco_mean_fuse(W.T, mem_img[cls_nb], RECO_WEIGHT)
    add("RECO (mean fusion)", "name-only + corpus", v_bar @ t_bar.T, t, weight=RECO_WEIGHT, k=RECO_K)
    t = time.perf_counter()
    # train on the first pairs of the memory (CPU budget); neighbours include each pair itself (first), which
    # train_reco masks, leaving k others
    n_tr = min(cfg["reco_train_pairs"], len(mem_img))
    tr_img, tr_txt = mem_img[:n_tr], mem_txt[:n_tr]
    fi, ft, hist = train_reco(tr_img, tr_txt, knn_ids(tr_img, tr_img, RECO_K + 1), knn_ids(tr_txt, tr_txt, RECO_K + 1),
                              epochs=cfg["reco_epochs"], batch_size=256, lr=2e-3, seed=seed)
    v_bar = reco_refine(fi, x, mem_txt[img_nb])
    t_bar = reco_refine(ft, W.T, mem_img[cls_nb])
    add("RECO (trained fusers)", "name-only + corpus", v_bar @ t_bar.T, t,
        train_pairs=n_tr, train_loss=[round(h["loss"], 4) for h in hist])

    # few-shot adapters
    keys, values = d.shot_feats, one_hot(d.shot_labels, C)
    shots = int(cfg["data"]["n_shots"])
    t = time.perf_counter()
    a, b, _ = tip_adapter_search(d.val_feats, d.val_labels, keys, values, W)
    add("Tip-Adapter (searched)", f"{shots}-shot", tip_adapter_logits(x, keys, values, W, a, b), t,
        params=dict(alpha=a, beta=b))
    t = time.perf_counter()
    hp = tipx_search(d.val_feats, d.val_labels, keys, values, W, search_step=cfg["tipx_steps"])
    add("TIP-X (searched)", f"{shots}-shot",
        tipx_logits(x, keys, values, W, hp["alpha"], hp["beta"], hp["gamma"], ref_affinity=d.val_feats @ keys.T),
        t, params=hp)
    t = time.perf_counter()
    views = l2_normalize(d.shot_views.reshape(-1, d.shot_views.shape[-1]))
    Wg, bg = gda_fit(views, np.repeat(d.shot_labels, d.shot_views.shape[1]), C)
    alpha, _ = gda_search_alpha(d.val_feats, d.val_labels, W, Wg, bg)
    add("GDA (alpha searched)", f"{shots}-shot", gda_logits(x, W, Wg, bg, alpha), t, params=dict(alpha=alpha))
    t = time.perf_counter()
    add("ProKeR (defaults)", f"{shots}-shot", proker_logits(keys, d.shot_labels, W, x), t,
        params=dict(beta=1.7, lam=0.1))

    return dict(config=config, seed=seed, data_params=d.params, rows=rows,
                total_seconds=round(time.perf_counter() - t0, 1))


def print_table(result: dict) -> None:
    zs = result["rows"][0]["acc"]
    print(f"{'method':34s} {'regime':24s} {'top-1 %':>8s} {'vs ZS':>7s} {'sec':>6s}")
    for r in result["rows"]:
        print(f"{r['method']:34s} {r['regime']:24s} {r['acc']:8.2f} {r['acc'] - zs:+7.2f} {r['seconds']:6.1f}")
    p = result["data_params"]
    print(f"[{result['config']}] C={p['num_classes']} D={p['dim']} test={p['n_test']} support={p['n_support']} "
          f"shots={p['n_shots']} seed={result['seed']}  total {result['total_seconds']} s")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    colors = {"name-only": "#4c72b0", "name-only + val labels": "#8172b2", "name-only + corpus": "#55a868"}
    fig, ax = plt.subplots(figsize=(9, 4.8))
    ys = np.arange(len(rows))[::-1]
    ax.barh(ys, [r["acc"] for r in rows], color=[colors.get(r["regime"], "#c44e52") for r in rows])
    ax.axvline(rows[0]["acc"], color="k", ls="--", lw=1, label="zero-shot")
    ax.set_yticks(ys, [f"{r['method']}  [{r['regime']}]" for r in rows], fontsize=8)
    for yy, r in zip(ys, rows):
        ax.text(r["acc"] + 0.5, yy, f"{r['acc']:.1f}", va="center", fontsize=8)
    ax.set_xlabel("top-1 accuracy (%)")
    p = result["data_params"]
    ax.set_title(f"clipdex classifiers on synthetic CLIP-like data (C={p['num_classes']}, seed={result['seed']})")
    ax.set_xlim(0, 100)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller problem and coarser grids (~20 s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    result = run("quick" if args.quick else "default", args.seed)
    print_table(result)
    save_result(result, args.out / "classify_compare.json")
    plot(result, args.out / "classify_compare.png")
    print(f"wrote {args.out / 'classify_compare.json'} and {args.out / 'classify_compare.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
