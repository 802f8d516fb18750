"""Bridges: one verified pair linking two groups of copies that have nothing else in common.

Two screenshots of different pictures taken in the same frame, or two drawings of one small shape on plain
grounds, can pass a pair's checks: the frame or the ground is most of both (and several such screenshots pass
with each other). One such pair joins every copy of one picture to every copy of the other. The copies of one
picture are verified with each other, so a true pair shares most of its ends' neighbours; a pair between two groups
shares few. So:

- ``unsupported``: a verified pair (a, b) whose ends share fewer than half the neighbours of the less linked end
  (a copy linked through this pair only shares none);
- ``bridge_checks``: the pairs to check around it: a against up to ``per_side`` of b's best-linked neighbours, and
  b against a's (``retrieval.query.dedup`` verifies them like any candidate);
- ``bridges``: the unsupported pairs whose cross pairs, among those decided, are mostly refused: two groups, not
  one. A copy linked to its group through one pair stays when it verifies with the group's best-linked members.

Pure functions: arrays in, arrays out.
"""
from __future__ import annotations

import numpy as np

PER_SIDE = 3    # cross pairs checked on each side of an unsupported pair
CAP = 32        # neighbours of an end looked at for a common one


def _graph(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """pairs (m, 2) ids -> (nodes (n,) sorted ids, ends (m, 2) node positions, indptr (n + 1,), neighbour
    positions (2m,) grouped by node, each node's neighbours by falling degree then id)."""
    nodes, ends = np.unique(pairs, return_inverse=True)
    ends = ends.reshape(-1, 2)
    src, dst = np.concatenate([ends[:, 0], ends[:, 1]]), np.concatenate([ends[:, 1], ends[:, 0]])
    degree = np.bincount(src, minlength=len(nodes))
    order = np.lexsort((dst, -degree[dst], src))
    indptr = np.concatenate([[0], np.cumsum(degree)])
    return nodes, ends, indptr, dst[order]


def unsupported(pairs: np.ndarray, cap: int = CAP) -> np.ndarray:
    """pairs (m, 2) int64 verified pairs (each once) -> (m,) bool: fewer common neighbours (looked for among the
    ``cap`` best-linked neighbours of the first end) than half of the smaller degree (at most ``cap``)."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return np.zeros(0, bool)
    nodes, ends, indptr, nbr = _graph(pairs)
    n = len(nodes)
    keys = np.sort(np.minimum(ends[:, 0], ends[:, 1]) * n + np.maximum(ends[:, 0], ends[:, 1]))
    a, b = ends[:, 0], ends[:, 1]
    size = np.minimum(indptr[a + 1] - indptr[a], cap)
    edge = np.repeat(np.arange(len(pairs)), size)
    first = np.repeat(indptr[a] - np.concatenate([[0], np.cumsum(size)[:-1]]), size)
    c = nbr[first + np.arange(int(size.sum()))]
    bb = b[edge]
    want = np.minimum(bb, c) * n + np.maximum(bb, c)
    at = np.searchsorted(keys, want).clip(0, len(keys) - 1)
    hit = (keys[at] == want) & (c != bb)
    common = np.bincount(edge[hit], minlength=len(pairs))
    degree = np.diff(indptr)
    return common < 0.5 * np.minimum(np.maximum(degree[a], degree[b]), cap)


def _cross(pairs: np.ndarray, per_side: int) -> tuple[np.ndarray, np.ndarray]:
    """(edge index (c,), cross pairs (c, 2) int64 sorted within each row) of the unsupported edges of ``pairs``."""
    nodes, _, indptr, nbr = _graph(pairs)
    pos = {int(v): i for i, v in enumerate(nodes)}
    edges, out = [], []
    for e in np.flatnonzero(unsupported(pairs)):
        a, b = int(pairs[e, 0]), int(pairs[e, 1])
        for x, y in ((a, b), (b, a)):   # x against y's best-linked neighbours
            py = pos[y]
            others = [int(nodes[v]) for v in nbr[indptr[py]:indptr[py + 1]] if int(nodes[v]) != x][:per_side]
            for z in others:
                edges.append(e)
                out.append((min(x, z), max(x, z)))
    return np.asarray(edges, np.int64), np.asarray(out, np.int64).reshape(-1, 2)


def bridge_checks(pairs: np.ndarray, checked: np.ndarray, decided: np.ndarray | None = None,
                  per_side: int = PER_SIDE) -> np.ndarray:
    """Pairs (c, 2) int64 (a < b, each once) to verify around the unsupported pairs of ``pairs`` (m, 2) verified
    pairs, leaving out those in ``checked`` (k, 2) (already decided or pending); with ``decided`` (every pair with a
    verdict), also around those left unsupported once the bridges it shows are gone."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return np.zeros((0, 2), np.int64)
    graphs = [pairs] if decided is None else [pairs, pairs[~bridges(pairs, decided, per_side=per_side)]]
    cross = np.concatenate([_cross(g, per_side)[1] for g in graphs if len(g)]).reshape(-1, 2)
    if len(cross) == 0:
        return cross
    cross = np.unique(cross, axis=0)
    return cross[~_member(cross, np.sort(np.asarray(checked, np.int64).reshape(-1, 2), axis=1))]


def bridges(pairs: np.ndarray, decided: np.ndarray, min_share: float = 0.5, per_side: int = PER_SIDE,
            rounds: int = 8) -> np.ndarray:
    """pairs (m, 2) int64 verified pairs, decided (k, 2) every pair with a verdict (verified or refused) -> (m,)
    bool: the unsupported pairs whose cross pairs (``bridge_checks``'s), among those decided, are verified in fewer
    than ``min_share`` (none decided: not a bridge). Found in rounds: once a bridge is gone, the pairs that leaned on
    it (a hub linked to both ends) are judged again without it, for at most ``rounds`` rounds."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    out = np.zeros(len(pairs), bool)
    decided = np.sort(np.asarray(decided, np.int64).reshape(-1, 2), axis=1)
    for _ in range(rounds):
        keep = np.flatnonzero(~out)
        found = _bridges_once(pairs[keep], decided, min_share, per_side)
        if not found.any():
            break
        out[keep[found]] = True
    return out


def _bridges_once(pairs: np.ndarray, decided: np.ndarray, min_share: float, per_side: int) -> np.ndarray:
    out = np.zeros(len(pairs), bool)
    if len(pairs) == 0:
        return out
    edge, cross = _cross(pairs, per_side)
    if len(cross) == 0:
        return out
    seen = _member(cross, decided)
    linked = _member(cross, np.sort(pairs, axis=1))
    n_seen = np.bincount(edge[seen], minlength=len(pairs))
    n_linked = np.bincount(edge[seen & linked], minlength=len(pairs))
    return (n_seen > 0) & (n_linked < min_share * np.maximum(n_seen, 1))


def _member(rows: np.ndarray, table: np.ndarray) -> np.ndarray:
    """rows (r, 2), table (t, 2) int64 -> (r,) bool: which rows are rows of table."""
    if len(table) == 0 or len(rows) == 0:
        return np.zeros(len(rows), bool)
    ids = np.unique(np.concatenate([rows.reshape(-1), table.reshape(-1)]))
    r, t = np.searchsorted(ids, rows), np.searchsorted(ids, table)   # positions: keys that cannot overflow
    keys = np.unique(t[:, 0] * len(ids) + t[:, 1])
    want = r[:, 0] * len(ids) + r[:, 1]
    at = np.searchsorted(keys, want).clip(0, len(keys) - 1)
    return keys[at] == want
