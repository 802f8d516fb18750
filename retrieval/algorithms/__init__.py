"""The papers' math as pure functions on arrays: classification (zero-shot, SuS-X, TIP-X, Tip-Adapter, X-MoRe,
RECO, GDA, ProKeR), video pooling and reranking (``video``), long-text chunking and Long-CLIP (``longtext``).

numpy (or torch) arrays in, float32 numpy arrays out; see docs/ALGORITHMS.md for the formulas and each module for its
paper. Nothing here reads files, opens an index or loads a model. The classification functions are re-exported
here; the RECO fusers need torch and are imported on first use.
"""

from retrieval.algorithms.augment import augmented_views
from retrieval.algorithms.gda import gda_fit, gda_logits, gda_search_alpha
from retrieval.algorithms.proker import proker_fit, proker_logits, proker_predict
from retrieval.algorithms.susx import rank_index, sus_lc_select, sus_lc_select_from_ranked
from retrieval.algorithms.tip_adapter import build_cache, tip_adapter_logits, tip_adapter_search
from retrieval.algorithms.tipx import (
    DEFAULT_TIPX,
    kl_matrix,
    rescale_to_range,
    tipx_kl,
    tipx_log_signatures,
    tipx_logits,
    tipx_search,
    tipx_signatures,
)
from retrieval.algorithms.xmore import (
    dedup_rerank_captions,
    xmore_caption_logits,
    xmore_confidence,
    xmore_confidences,
    xmore_image_logits,
    xmore_predict_batch,
    xmore_predict_stream,
)
from retrieval.algorithms.zeroshot import (
    TEMPLATE_SETS,
    build_text_classifier,
    get_templates,
    load_descriptions,
    load_templates,
    zeroshot_logits,
)

_RECO = ("RecoFuser", "fusers_from_checkpoint", "knn_ids", "load_reco_checkpoint", "reco_loss", "reco_mean_fuse",
         "reco_blend_logits", "reco_refine", "reco_search_blend", "reco_search_weight", "save_reco_checkpoint",
         "train_reco", "train_reco_step")


def __getattr__(name):
    if name in _RECO:
        from retrieval.algorithms import reco  # torch: imported only when a RECO name is used

        return getattr(reco, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "augmented_views", "gda_fit", "gda_logits", "gda_search_alpha", "proker_fit", "proker_logits", "proker_predict",
    "rank_index", "sus_lc_select",
    "sus_lc_select_from_ranked", "build_cache", "tip_adapter_logits", "tip_adapter_search", "DEFAULT_TIPX",
    "kl_matrix", "rescale_to_range", "tipx_kl", "tipx_log_signatures", "tipx_logits", "tipx_search",
    "tipx_signatures", "dedup_rerank_captions", "xmore_caption_logits", "xmore_confidence", "xmore_confidences",
    "xmore_image_logits", "xmore_predict_batch", "xmore_predict_stream",
    "TEMPLATE_SETS", "build_text_classifier", "get_templates", "load_descriptions", "load_templates",
    "zeroshot_logits", *_RECO,
]
