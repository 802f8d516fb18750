"""Compaction of a Lance table that leaves the fragments an import wrote whole as they are.

LanceDB's own ``optimize`` merges every fragment under a million rows, so an import committed in blocks was written
twice: the table stood at twice its size on disk until the old files were older than the readers' grace period (the
next ``optimize``). Here only fragments under ``FRAGMENT_ROWS`` rows (small appends, a file's last block) or with
many deleted rows are merged; a block the import wrote is never rewritten.
"""
from __future__ import annotations

from datetime import timedelta

FRAGMENT_ROWS = 65_536  # ``index embeddings``'s block: a fragment this size is kept as written
DELETED_SHARE = 0.1  # a fragment with this share of its rows deleted is rewritten without them


def compact(table, keep_for: timedelta) -> dict:
    """Merge the small fragments of a LanceDB ``table``, fold new rows into its indexes and delete the versions
    older than ``keep_for`` (readers holding one get that long); returns Lance's counts."""
    import lance  # heavy optional dependency, loaded with the Lance backend

    uri = table.to_lance().uri
    done = lance.dataset(uri).optimize.compact_files(target_rows_per_fragment=FRAGMENT_ROWS,
                                                     materialize_deletions_threshold=DELETED_SHARE)
    lance.dataset(uri).optimize.optimize_indices()
    freed = lance.dataset(uri).cleanup_old_versions(older_than=keep_for)
    table.checkout_latest()
    return {"fragments_removed": done.fragments_removed, "fragments_added": done.fragments_added,
            "bytes_removed": freed.bytes_removed}
