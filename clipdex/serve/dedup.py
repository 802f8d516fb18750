"""``GET /api/dedup``: the near-duplicate groups of one served table, a page at a time, for the page at ``/dedup``.

The groups come from ``retrieval.query.dedup.find_duplicates`` with the index's saved dedup state (the folder
``<index>/cache/dedup/``, the one ``clipdex dedup`` keeps): a first request on a large table runs the whole search
under the service's query timeout (past it: 504, run ``clipdex dedup`` first), later ones only search rows added
since. One run per table at a time; the groups of the latest run are kept in memory for paging. Members carry
thumbnail and file URLs; with ``keep`` each group names the member kept and the paths it would remove (nothing is
ever deleted).
"""
from __future__ import annotations

import threading
from typing import Optional

from fastapi import APIRouter, Query, Request

from clipdex.serve.queries import result_row
from retrieval.algorithms.dedup import KINDS
from retrieval.errors import InvalidInput
from retrieval.query.dedup import KEEP, RULES, DedupOptions, find_duplicates

router = APIRouter()
_locks: dict[tuple, threading.Lock] = {}
_guard = threading.Lock()
_last: dict[tuple, tuple] = {}   # (index, table) -> (options, the index's state when run, groups, summary)


def _lock(key: tuple) -> threading.Lock:
    with _guard:
        return _locks.setdefault(key, threading.Lock())


def run_dedup(served, options: DedupOptions) -> tuple[list[dict], dict]:
    """The groups and summary of ``options`` on ``served`` (reused while the served index is the same snapshot)."""
    key = (served.name, options.table)
    asked = (options.k, options.min_score, options.rule, options.keep)
    with _lock(key):
        cached = _last.get(key)
        if cached is not None and cached[0] == asked and cached[1] is served.index:
            return cached[2], cached[3]
        result = find_duplicates(served.index, options)
        _last[key] = (asked, served.index, result.groups, result.summary)   # the latest run only: memory per table
        return result.groups, result.summary


def page_group(name: str, table: str, group: dict) -> dict:
    """A group as the page shows it: members with thumbnail/file URLs, and the paths ``keep`` would remove."""
    out = dict(group)
    out["members"] = [result_row(name, table, m) for m in group["members"]]
    if group.get("keep") is not None:
        out["remove"] = [m.get("path") for m in group["members"] if m["id"] != group["keep"] and m.get("path")]
    return out


@router.get("/api/dedup")
async def dedup(request: Request, index: Optional[str] = Query(None, description="served index (default: first)"),
                table: str = Query("images"),
                rule: Optional[str] = Query(None, description="how pairs form groups (default: clipdex dedup's)"),
                keep: Optional[str] = Query(None, description="largest | newest | first: name the member to keep"),
                kinds: str = Query(",".join(KINDS), description="kinds of groups to list, comma-separated"),
                k: int = Query(10, ge=1, le=1000), min_score: float = Query(0.5, ge=-1, le=1),
                offset: int = Query(0, ge=0), limit: int = Query(20, ge=1, le=200)):
    """Near-duplicate groups of a table (kind, members side by side, pairwise scores and kinds; with ``keep`` the
    member kept and the paths to remove), ``limit`` groups from ``offset``, with the run's summary."""
    svc = request.app.state.service
    wanted = [s.strip() for s in kinds.split(",") if s.strip()]
    if not wanted or not set(wanted) <= set(KINDS):
        raise InvalidInput(f"unknown kind in {kinds!r}; kinds: {', '.join(KINDS)}")
    if rule is not None and rule not in RULES:
        raise InvalidInput(f"unknown rule {rule!r}; choose {', '.join(RULES)}")
    if keep is not None and keep not in KEEP:
        raise InvalidInput(f"unknown keep policy {keep!r}; choose {', '.join(KEEP)}")
    served = svc.registry.get(index)
    served.schema(table)   # 404 for a table the index does not have
    options = DedupOptions(table=table, k=k, min_score=min_score, keep=keep)
    options.rule = rule or options.rule
    options.check()        # 400 for a table dedup does not work on
    work = svc.run(run_dedup, served, options)
    groups, summary = await svc.bounded(work, "dedup run", "run `clipdex dedup` on the index first (its saved "
                                                           "state makes this page fast)")
    chosen = [g for g in groups if g["kind"] in wanted]
    return {"index": served.name, "table": table, "rule": options.rule, "keep": keep, "summary": summary,
            "total": len(chosen), "offset": offset, "limit": limit,
            "groups": [page_group(served.name, table, g) for g in chosen[offset:offset + limit]]}
