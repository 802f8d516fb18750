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
                  per_side: int = PER_SIDE, bridged: np.ndarray | None = None) -> np.ndarray:
    """Pairs (c, 2) int64 (a < b, each once) to verify around the unsupported pairs of ``pairs`` (m, 2) verified
    pairs, leaving out those in ``checked`` (k, 2) (already decided or pending); with ``decided`` (every pair with a
    verdict), also around those left unsupported once the bridges it shows are gone (``bridged`` (m,) bool: those
    bridges, when the caller has them already)."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return np.zeros((0, 2), np.int64)
    if bridged is None and decided is not None:
        bridged = bridges(pairs, decided, per_side=per_side)
    graphs = [pairs] if bridged is None else [pairs, pairs[~bridged]]
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


def communities(pairs: np.ndarray, rounds: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Dense parts of the graph of ``pairs`` (m, 2) int64 by label propagation (Raghavan, Albert and Kumara, Phys.
    Rev. E 76, 036106, 2007): every node starts with its own label and takes, round after round, the label most
    of its neighbours and itself hold (ties: the smallest), until nothing changes. Returns (nodes (n,) sorted ids,
    labels (n,) int64). Two copy families joined by a few pairs keep their own labels."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    nodes, ends = np.unique(pairs, return_inverse=True)
    ends = ends.reshape(-1, 2)
    n = len(nodes)
    src = np.concatenate([ends[:, 0], ends[:, 1], np.arange(n)])   # each node votes for itself too (no flip-flop)
    dst = np.concatenate([ends[:, 1], ends[:, 0], np.arange(n)])
    labels = np.arange(n)
    for _ in range(rounds):
        key, count = np.unique(src * n + labels[dst], return_counts=True)
        node, label = key // n, key % n
        order = np.lexsort((label, -count, node))          # per node: most votes first, then the smallest label
        first = np.ones(len(order), bool)
        first[1:] = node[order][1:] != node[order][:-1]
        new = labels.copy()
        new[node[order][first]] = label[order][first]
        if (new == labels).all():
            break
        labels = new
    return nodes, labels


def family_bridges(pairs: np.ndarray, decided: np.ndarray | None, per_side: int = PER_SIDE,
                   min_share: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Between two communities (``communities``) joined by some of ``pairs`` (m, 2): the ``per_side`` best-linked
    members of one against the other's. Returns (the pairs to check (c, 2) int64, sorted, not in ``decided``;
    (m,) bool: the pairs between two communities whose checked pairs, among those decided, are verified in fewer
    than ``min_share``). ``decided`` None: nothing is judged yet."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    out = np.zeros(len(pairs), bool)
    if len(pairs) == 0:
        return np.zeros((0, 2), np.int64), out
    nodes, labels = communities(pairs)
    la, lb = labels[np.searchsorted(nodes, pairs[:, 0])], labels[np.searchsorted(nodes, pairs[:, 1])]
    between = la != lb
    if not between.any():
        return np.zeros((0, 2), np.int64), out
    inside = pairs[~between]
    degree = np.bincount(np.searchsorted(nodes, inside.reshape(-1)), minlength=len(nodes))
    best = {}
    for lab in np.unique(np.concatenate([la[between], lb[between]])):
        members = np.flatnonzero(labels == lab)
        best[int(lab)] = nodes[members[np.lexsort((nodes[members], -degree[members]))][:per_side]]
    sides = np.unique(np.stack([np.minimum(la, lb), np.maximum(la, lb)], 1)[between], axis=0)
    checks, verdict = [], {}
    decided_sorted = None if decided is None else np.sort(np.asarray(decided, np.int64).reshape(-1, 2), axis=1)
    linked = np.sort(pairs, axis=1)
    for p, q in sides:
        cross = np.array([(min(x, y), max(x, y)) for x in best[int(p)] for y in best[int(q)]], np.int64)
        checks.append(cross)
        if decided_sorted is not None:
            seen = _member(cross, decided_sorted)
            ok = _member(cross, linked) & seen
            verdict[(int(p), int(q))] = seen.any() and ok.sum() < min_share * seen.sum()
    cross = np.unique(np.concatenate(checks), axis=0)
    if decided_sorted is not None:
        cross = cross[~_member(cross, decided_sorted)]
        for e in np.flatnonzero(between):
            out[e] = verdict[(int(min(la[e], lb[e])), int(max(la[e], lb[e])))]
    return cross, out


def kept_links(pairs: np.ndarray, decided: np.ndarray) -> np.ndarray:
    """pairs (m, 2) verified pairs, decided (k, 2) every pair with a verdict -> (m,) bool: the pairs that link a
    group (``bridges`` removed, then the pairs between two communities that ``family_bridges`` judges apart)."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    keep = ~bridges(pairs, decided)
    at = np.flatnonzero(keep)
    keep[at[family_bridges(pairs[at], decided)[1]]] = False
    return keep


def checks_around(pairs: np.ndarray, checked: np.ndarray, decided: np.ndarray) -> np.ndarray:
    """The pairs (c, 2) int64 to verify before ``kept_links`` can judge ``pairs``: around the unsupported pairs
    (``bridge_checks``) and between communities (``family_bridges``), none of them in ``checked`` (k, 2)."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return np.zeros((0, 2), np.int64)
    bridged = bridges(pairs, decided)
    around = bridge_checks(pairs, checked, bridged=bridged)
    families = family_bridges(pairs[~bridged], checked)[0]
    return np.unique(np.concatenate([around, families]).reshape(-1, 2), axis=0)
