"""Tuning an ANN index's search parameters: the cheapest setting of a grid whose recall@k on held-out queries meets
a target (:func:`tune_search_params`), measured with as few searches as the grid's order allows. A function of a
search callable and arrays: no store, no index (``retrieval/ann/tuning.py`` drives it).
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from retrieval.ann.exact import pooled_recall, query_hits, recall_lower_bound


@dataclass
class Tuning:
    """The chosen search parameters, their measured recall@k and seconds per query batch, and every point tried."""

    params: dict
    recall: float
    seconds: float
    met: bool
    tried: list = field(default_factory=list)


def tune_search_params(search_fn: Callable[[np.ndarray, int, dict], np.ndarray], xq: np.ndarray,
                       I_gt: np.ndarray, k: int, recall_target: float, grid: dict[str, list],
                       repeats: int = 1, z: float = 0.0, start: dict | None = None,
                       known: dict | None = None) -> Tuning:
    """Cheapest search parameters reaching ``recall_target`` (k-recall@k against I_gt (q, >=k)).

    ``search_fn(xq, k, params) -> I (q, k)``; ``grid`` maps each parameter to increasing values, the first one
    being the primary knob (nprobe, efSearch): recall grows with it, and with every other knob (k_factor,
    refine_factor, ef: deeper refinement or a wider candidate list never loses a neighbour), while time grows with
    the primary knob. For every combination of the other parameters (a *chain*), the smallest primary value meeting
    the target is wanted. Chains are walked from the deepest settings down (``start``'s chain first, when it names
    one): the first is bisected (about log2(len) searches); a chain that a solved one dominates (each other knob at
    most as deep) cannot meet the target below that chain's value, so it starts there and steps up, and is left as
    soon as a step is slower than the fastest setting found (a larger primary value only costs more). A chain deeper
    than a solved one meets the target at that chain's value or lower, and at that value costs more: it is first
    screened on a tenth of the queries (``_screen``: the dearest value still faster than the fastest setting found,
    and whether the recall there can reach the target; refinement's cost does not shrink with the primary knob, so a
    deeper chain is usually ruled out there), then bisected on all of them up to that value; a chain at most as deep
    as one whose widest setting falls short is not measured. Among the chains' settings that no other one dominates
    (every knob at most as deep: it costs no more) the fastest measured batch wins; when none meets the target, the
    setting with the highest recall (``met`` False). With ``z`` > 0 a setting meets the target when the lower
    confidence bound of its recall (``recall_lower_bound``: mean minus z standard errors over the queries) does, so
    that it holds on other queries of the same kind; ``recall`` stays the measured mean. ``start`` (a setting
    expected near the answer: a choice measured on a sample): a chain bisected from scratch measures its primary
    value first and is bisected below it when it meets the target, above it otherwise: the widest (dearest) setting
    is then measured only when needed. ``known`` (a dict, filled here): the measurements of an earlier call on the
    same queries, by setting: a setting in it is not searched again.
    """
    names = list(grid)
    tried: list[dict] = []

    def measure(params: dict) -> dict:
        key = tuple(sorted(params.items()))
        if known is not None and key in known:
            tried.append(known[key])
            return known[key]
        best_t = math.inf
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            I = search_fn(xq, k, params)
            best_t = min(best_t, time.perf_counter() - t0)
        counts = query_hits(I, I_gt, k)
        r = pooled_recall(*counts)
        lcb = recall_lower_bound(*counts, z) if z > 0 else r
        tried.append({"params": params, "recall": r, "seconds": best_t, "judged": lcb})
        if known is not None:
            known[key] = tried[-1]
        return tried[-1]

    chain_best: list[dict] = []  # per chain, its smallest primary value meeting the target
    if not names:
        chain_best = [t for t in [measure({})] if t["judged"] >= recall_target]
    else:
        primary, values = names[0], list(grid[names[0]])
        solved: list[tuple[tuple, int]] = []  # (the chain's other knobs, the index of its smallest value)
        failed: list[tuple] = []  # chains that cannot reach the target at the widest search
        for rest in _chain_order(grid, names, start):
            fixed = dict(zip(names[1:], rest))
            if any(all(o >= r for o, r in zip(other, rest)) for other in failed):
                continue  # a chain at least as deep cannot reach the target: neither can this one
            bounds = [i for other, i in solved if all(o >= r for o, r in zip(other, rest))]
            below = [i for other, i in solved if all(o <= r for o, r in zip(other, rest))]
            fastest = min((t["seconds"] for t in chain_best), default=math.inf)
            if bounds:
                found = _step_up(measure, primary, values, fixed, max(bounds), recall_target, fastest)
            elif below:  # deeper than a solved chain: it meets the target below that chain's value, or loses
                j = _screen(search_fn, xq, I_gt, k, primary, values[:min(below)], fixed, fastest, recall_target, z)
                if j < 0:
                    continue  # screened on a tenth of the queries: too slow wherever it could meet the target
                found = _bisect(measure, primary, values[:j + 1], fixed, recall_target,
                                _start_index(start, primary, values[:j + 1], fixed), fastest)
            else:
                found = _bisect(measure, primary, values, fixed, recall_target,
                                _start_index(start, primary, values, fixed))
            if found is not None:
                chain_best.append(found[0])
                solved.append((rest, found[1]))
            elif not bounds and not below:  # bisected from scratch: its widest search falls short
                failed.append(rest)
    ok = _undominated(chain_best, names)  # across chains the fastest measured batch wins; within one, the smallest
    if ok:
        best = min(ok, key=lambda t: t["seconds"])
        return Tuning(dict(best["params"]), float(best["recall"]), float(best["seconds"]), True, tried)
    if z > 0 and names and tried:  # how far down the best setting's chain the recall stays near the best
        top, floor = near_best(tried, z)

        def by_mean(params: dict) -> dict:
            point = measure(params)
            return {**point, "judged": point["recall"]}

        values = [v for v in grid[names[0]] if v <= top["params"][names[0]]]
        _bisect(by_mean, names[0], values, {n: top["params"][n] for n in names[1:]}, floor)
    best = saturated_choice(tried, z)
    return Tuning(dict(best["params"]), float(best["recall"]), float(best["seconds"]),
                  bool(z > 0 and best["recall"] >= recall_target), tried)


def saturated_choice(tried: list[dict], z: float) -> dict:
    """No setting's lower bound met the target: the fastest setting whose recall is within one standard error of
    the best measured one (``judged`` is the recall minus ``z`` of them). Where recall has stopped growing (the
    refinement depth, not the probe, limits it) a wider search buys nothing measurable, and the bound guards
    nothing: the chosen setting then counts as meeting the target when its mean recall does."""
    _, floor = near_best(tried, z)
    return min((t for t in tried if t["recall"] >= floor), key=lambda t: t["seconds"])


def near_best(tried: list[dict], z: float) -> tuple[dict, float]:
    """The best measured setting (highest recall, then fastest) and the recall one standard error below it."""
    top = max(tried, key=lambda t: (t["recall"], -t["seconds"]))
    return top, top["recall"] - ((top["recall"] - top["judged"]) / z if z > 0 else 0.0)


def _undominated(settings: list[dict], names: list[str]) -> list[dict]:
    """The settings no other one dominates: a setting with every knob at most as deep and one shallower costs no
    more (time grows with each knob), so timing need not decide between them: a noisy batch must not pick the
    deeper one (the same nprobe at k_factor 64 over 16)."""
    def key(t: dict) -> tuple:
        return tuple(t["params"][n] for n in names)

    return [t for t in settings if not any(key(o) != key(t) and all(a <= b for a, b in zip(key(o), key(t)))
                                           for o in settings)]


def first_at_least(values: list, value) -> int:
    """The position of the first of increasing ``values`` at least ``value`` (the last one when none is)."""
    return next((i for i, v in enumerate(values) if v >= value), len(values) - 1)


def _start_index(start: dict | None, primary: str, values: list, fixed: dict) -> int | None:
    """Where ``start``'s primary value sits on a chain (``first_at_least``), None without one: a chain at least as
    deep as ``start``'s meets the target there or lower, a shallower one a little higher."""
    if not start or primary not in start:
        return None
    return first_at_least(values, start[primary])


def _chain_order(grid: dict[str, list], names: list[str], start: dict | None) -> list[tuple]:
    """The chains (values of the knobs after the primary one) from the deepest down; ``start``'s chain first when
    it names one: the setting expected near the answer is measured before any deeper (dearer) chain."""
    chains = sorted(itertools.product(*(grid[n] for n in names[1:])), reverse=True)
    if start and all(n in start for n in names[1:]):
        mine = tuple(start[n] for n in names[1:])
        if mine in chains:
            chains.remove(mine)
            chains.insert(0, mine)
    return chains


def _screen(search_fn, xq: np.ndarray, I_gt: np.ndarray, k: int, primary: str, values: list, fixed: dict,
            fastest: float, target: float, z: float, share: int = 10) -> int:
    """For a chain deeper than a solved one (``values``: its primary values below that chain's answer, where alone
    it could win), screened on a tenth of the queries (at least 20): the index of the largest value whose search is
    estimated faster than ``fastest`` seconds (time grows with the value: found by bisection), or -1 when there is
    none or when even there the recall's upper confidence bound stays below ``target`` (no smaller value can meet
    it). Refinement's cost does not shrink with the primary knob, so a deeper chain is usually ruled out here for
    a few tenths of a full search each, instead of bisected on every query. Everything passes without a time."""
    if not values:
        return -1
    if not math.isfinite(fastest) or len(xq) < 2 * share:
        return len(values) - 1
    m = max(20, len(xq) // share)

    def run(i: int) -> tuple[float, np.ndarray]:
        t0 = time.perf_counter()
        I = search_fn(xq[:m], k, {primary: values[i], **fixed})
        return (time.perf_counter() - t0) * len(xq) / m, I

    lo, hi, best, found = 0, len(values) - 1, -1, None
    while lo <= hi:  # the largest affordable value
        mid = (lo + hi) // 2
        seconds, I = run(mid)
        if seconds < fastest:
            best, found, lo = mid, I, mid + 1
        else:
            hi = mid - 1
    if best < 0:
        return -1
    upper = recall_lower_bound(*query_hits(found, I_gt[:m], k), -max(z, 1.0))  # a negative z: the upper bound
    return best if upper >= target else -1


def _bisect(measure, primary: str, values: list, fixed: dict, target: float,
            start: int | None = None, fastest: float = math.inf) -> tuple[dict, int] | None:
    """The smallest primary value of a chain meeting ``target`` (its measurement and index), or None. ``start``:
    the index of the value to measure first (else the widest is), then its neighbours at doubling distances (one
    step, two, four, ... down when it meets the target, up when it does not) before bisecting what is left: a
    start one step from the answer costs two or three searches. A point that misses the target no faster than
    ``fastest`` seconds ends the chain (None): every value that could meet it is slower still."""
    lo, hi = 0, len(values) - 1
    found = None

    def at(i: int) -> dict:
        return measure({primary: values[i], **fixed})

    if start is not None and start < hi:
        point, step = at(start), 1
        if point["judged"] >= target:
            hi, found = start, point
            while lo < hi:  # down from the start: 1, 2, 4, ... steps
                i = max(lo, start - step)
                point = at(i)
                if point["judged"] < target:
                    lo = i + 1
                    break
                hi, found, step = i, point, step * 2
        elif point["seconds"] >= fastest:
            return None
        else:
            lo = start + 1
            while start + step < hi:  # up from the start until a value meets the target
                point = at(start + step)
                if point["judged"] >= target:
                    hi, found = start + step, point
                    break
                if point["seconds"] >= fastest:
                    return None
                lo, step = start + step + 1, step * 2
    if found is None:
        top = at(hi)
        if top["judged"] < target:
            return None  # this chain cannot reach the target
        found = top
    while lo < hi:  # invariant: values[hi] meets the target
        mid = (lo + hi) // 2
        point = at(mid)
        if point["judged"] >= target:
            hi, found = mid, point
        elif point["seconds"] >= fastest:
            return None
        else:
            lo = mid + 1
    return found, hi


def _step_up(measure, primary: str, values: list, fixed: dict, start: int, target: float,
             fastest: float) -> tuple[dict, int] | None:
    """A dominated chain: from ``values[start]`` upwards until the target is met, or a step is no faster than
    ``fastest`` seconds, the best setting found (then None: a larger value can only be slower still)."""
    for i in range(start, len(values)):
        point = measure({primary: values[i], **fixed})
        if point["judged"] >= target:
            return point, i
        if point["seconds"] >= fastest:
            return None
    return None
