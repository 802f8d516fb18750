"""``clipdex.dedup``: near-duplicate groups of an index's table, as ``clipdex dedup`` finds them (same defaults).

    import clipdex

    found = clipdex.dedup("photos.clipdex", keep="largest")     # read-only; re-runs compare only new rows
    for group in found.groups:                                  # kind: exact | near | similar | contained
        print(group["kind"], [m["path"] for m in group["members"]], group["keep"])
    print(found.summary)                                        # rows, candidates, verified pairs, groups per kind
    to_remove = found.remove_list()                             # paths not kept; clipdex never deletes them
"""
from __future__ import annotations

from clipdex.arguments import OnProgress, PathLike, readable, with_changes
from retrieval.index.directory import Index
from retrieval.query.dedup import DedupOptions, DedupResult, find_duplicates

__all__ = ["dedup", "DedupOptions", "DedupResult"]


def dedup(index: Index | PathLike, table: str = "images", *, options: DedupOptions | None = None,
          on_progress: OnProgress | None = None, **changes) -> DedupResult:
    """Groups of near-duplicates in ``table`` (images, videos or texts) of ``index`` (an open Index or a path).

    Keyword options are ``DedupOptions`` fields: ``k`` (10), ``min_score`` (0.5), ``rule`` ("linked", "components"
    or "clique"), ``keep`` (None, "largest", "newest", "first"), ``fresh`` (False: reuse what earlier runs saved in
    the index's cache), ``thresholds`` (``ImageThresholds``), ``frame_score`` (0.9). Every candidate pair is
    verified with a second signal before it joins a group. Returns a ``DedupResult`` (``groups``, ``summary``,
    ``remove_list()``)."""
    opts = with_changes(DedupOptions, options, {"table": table, **changes})
    with readable(index) as ix:
        return find_duplicates(ix, opts, on_progress)
