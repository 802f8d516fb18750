"""Retrieval-augmented and few-shot classification math: pure functions on CLIP feature arrays.

numpy (or torch) arrays in, float32 numpy arrays out; see ALGORITHMS.md for the formulas and each module for its
paper. The RECO fusers need torch and are imported on first use.
"""

from .augment import augmented_views
from .gda import gda_fit, gda_logits, gda_search_alpha
from .proker import proker_fit, proker_logits, proker_predict
from .susx import rank_index, sus_lc_select, sus_lc_select_from_ranked
from .tip_adapter import build_cache, tip_adapter_logits, tip_adapter_search
from .tipx import (DEFAULT_TIPX, kl_matrix, rescale_to_range, tipx_kl, tipx_log_signatures, tipx_logits, tipx_search,
                   tipx_signatures)
from .xmore import (dedup_rerank_captions, xmore_caption_logits, xmore_confidence, xmore_confidences,
                    xmore_image_logits, xmore_predict_batch, xmore_predict_stream)
from .zeroshot import (TEMPLATE_SETS, build_text_classifier, get_templates, load_descriptions, load_templates,
                       zeroshot_logits)

_RECO = ("RecoFuser", "knn_ids", "reco_loss", "reco_mean_fuse", "reco_refine", "train_reco", "train_reco_step")


def __getattr__(name):
    if name in _RECO:
        from . import reco

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
