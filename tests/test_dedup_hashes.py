"""Candidate pairs from perceptual hashes (multi-index hashing over probe codes) and the bridge rule of linked groups:
the join finds what a brute-force comparison finds, a turned, recoloured or framed copy that the model's neighbours
miss is found and grouped, a re-run codes only new rows, and a pair linking two groups is dropped when the pairs
checked around it are refused."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from retrieval.algorithms.dedup_bridges import bridge_checks, bridges, unsupported
from retrieval.algorithms.hamming import hamming_join, popcount


def _planted(rng, n_table=4000, n_query=2000, flips=12):
    table = rng.integers(0, 2 ** 63, (n_table, 2), dtype=np.int64).astype(np.uint64) * np.uint64(2)
    table_owner = rng.integers(0, 1000, n_table)
    queries = table[rng.integers(0, n_table, n_query)].copy()
    for i in range(n_query):   # each query a copy of a table code with a few bits flipped in each column
        for col in range(2):
            for b in rng.choice(64, rng.integers(0, flips), replace=False):
                queries[i, col] ^= np.uint64(1) << np.uint64(int(b))
    return queries, rng.integers(1000, 2000, n_query), table, table_owner


def _brute(queries, query_owner, table, table_owner, max_bits, max_both):
    d0 = popcount(queries[:, None, 0] ^ table[None, :, 0])
    both = np.maximum(d0, popcount(queries[:, None, 1] ^ table[None, :, 1]))
    i, j = np.nonzero((d0 <= max_bits) & (both <= max_both))
    return {(min(a, b), max(a, b)) for a, b in zip(query_owner[i].tolist(), table_owner[j].tolist())}


def test_the_join_finds_every_pair_within_its_guaranteed_bits_and_nothing_beyond_the_bounds():
    queries, qo, table, to = _planted(np.random.default_rng(0))
    got = hamming_join(queries, qo, table, to, max_bits=7, max_both=10)
    assert {tuple(p) for p in got.pairs.tolist()} == _brute(queries, qo, table, to, 7, 10)
    assert len(got.pairs) > 500 and (got.pairs[:, 0] < got.pairs[:, 1]).all()
    # past the guarantee (4 chunks, 1 flip: 7 bits) most pairs are still found, and none outside the bounds
    wide = hamming_join(queries, qo, table, to, max_bits=10, max_both=14)
    want = _brute(queries, qo, table, to, 10, 14)
    found = {tuple(p) for p in wide.pairs.tolist()}
    assert found <= want and len(found) >= 0.9 * len(want) and len(found) < len(want) + 1
    exact_only = hamming_join(queries, qo, table, to, max_bits=7, max_both=10, flips=0)
    assert {tuple(p) for p in exact_only.pairs.tolist()} >= _brute(queries, qo, table, to, 3, 10)


def test_the_join_leaves_out_a_row_against_itself_and_counts_crowded_buckets():
    codes = np.array([[5, 9], [5, 9], [5, 9], [7, 9]], np.uint64)
    owner = np.array([1, 1, 2, 3])
    got = hamming_join(codes, owner, codes, owner, max_bits=2, max_both=2)
    assert got.pairs.tolist() == [[1, 2], [1, 3], [2, 3]] and got.crowded == 0
    crowded = hamming_join(codes, owner, codes, owner, max_bits=2, max_both=2, max_bucket=2)
    assert crowded.crowded > 0 and [1, 2] not in crowded.pairs.tolist()


def test_pairs_linking_two_groups_are_bridges_when_the_pairs_around_them_are_refused():
    # two families (0-5 and 10-15, each a clique), one member of each (0 and 10) linked to the other, and a hub 20
    # (a third screenshot in the same frame) linked to both
    fam = lambda base: [(base + i, base + j) for i in range(6) for j in range(i + 1, 6)]  # noqa: E731
    links = [(0, 10), (0, 20), (10, 20)]
    pairs = np.array(fam(0) + fam(10) + links, np.int64)
    weak = unsupported(pairs)
    assert weak[-3:].all() and not weak[fam(0).index((1, 2))] and not weak[15 + fam(10).index((12, 13))]
    around = bridge_checks(pairs, pairs)
    assert len(around) and not {tuple(p) for p in around.tolist()} & {tuple(p) for p in pairs.tolist()}
    refused = np.concatenate([pairs, bridge_checks(pairs, pairs, np.concatenate([pairs, around])), around])
    found = bridges(pairs, refused)
    assert found[-3:].all() and not found[:-3].any()     # the hub's links fall once the 0-10 link has
    # a copy of family 0 linked through one member (6 -> 0), whose pairs with the family's others verify: kept
    pendant = np.concatenate([pairs[:-3], [(0, 6)]])
    checks = bridge_checks(pendant, pendant)
    assert {tuple(p) for p in checks.tolist()} == {(1, 6), (2, 6), (3, 6)}
    assert not bridges(np.concatenate([pendant, checks]), np.concatenate([pendant, checks])).any()
    assert bridges(pendant, np.concatenate([pendant, checks]))[-1]   # the same pairs refused: a bridge


def test_pairs_checked_around_nothing_decided_are_not_bridges():
    pairs = np.array([[0, 1], [1, 2], [0, 2], [2, 3]], np.int64)
    assert not bridges(pairs, pairs[:0]).any()


pytest.importorskip("imagehash")
pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def turned(tmp_path_factory):
    from clipdex.synthetic.dedup import make_dedup_images

    root = tmp_path_factory.mktemp("hashes")
    items = make_dedup_images(root / "img", n_originals=3, seed=3, negatives=1,
                              transforms=("rotate", "colour", "screenshot"))
    _index(root / "img", root / "ix.clipdex")
    return root, items


def _copies_with_their_original(result, items) -> tuple[int, int]:
    of = {Path(m["path"]).name: i for i, g in enumerate(result.groups) if g["kind"] != "similar"
          for m in g["members"]}
    copies = [it for it in items if it.role == "near"]
    together = sum(1 for it in copies if Path(it.path).name in of and of[Path(it.path).name] == of.get(
        f"o{it.group:04d}.png"))
    return together, len(copies)


def test_copies_the_model_does_not_rank_near_are_found_by_their_hashes(turned, tmp_path):
    from retrieval.query.dedup import DedupOptions, find_duplicates

    root, items = turned
    ix = tmp_path / "ix.clipdex"
    shutil.copytree(root / "ix.clipdex", ix)
    strict = dict(k=1, min_score=0.999)   # the model proposes only near-identical vectors
    without = find_duplicates(ix, DedupOptions(**strict, hashes=False))
    with_hashes = find_duplicates(ix, DedupOptions(**strict))
    found_without, n = _copies_with_their_original(without, items)
    found_with, _ = _copies_with_their_original(with_hashes, items)
    assert found_without < n // 2 and found_with == n, (found_without, found_with, n)
    negatives = {Path(it.path).name for it in items if it.role == "negative"}
    assert not negatives & {Path(m["path"]).name for g in with_hashes.groups for m in g["members"]}
    assert (ix / "cache" / "dedup" / "images.codes.npz").exists()


def _index(src, ix, *extra):
    from click.testing import CliRunner

    from cli.main import cli

    res = CliRunner().invoke(cli, ["index", "images", str(src), "--index", str(ix), "--model", "clipdex-tiny",
                                   "--workers", "0", *extra])
    assert res.exit_code == 0, res.output


def test_a_rerun_codes_and_joins_only_the_rows_added_since(turned, tmp_path, monkeypatch):
    from PIL import Image

    import retrieval.query.dedup_hashes as dedup_hashes
    from retrieval.query.dedup import DedupOptions, find_duplicates

    root, _ = turned
    shutil.copytree(root / "img", tmp_path / "img")
    ix = tmp_path / "ix.clipdex"
    _index(tmp_path / "img", ix, "--no-dedup-codes")   # dedup codes the files (the indexer's: test_probe_codes.py)
    options = DedupOptions(k=1, min_score=0.999)
    find_duplicates(ix, options)
    coded = []
    probe = dedup_hashes.probe_codes
    monkeypatch.setattr(dedup_hashes, "probe_codes", lambda img: coded.append(img.size) or probe(img))
    assert find_duplicates(ix, options).summary["searched"] == 0 and coded == []
    Image.open(tmp_path / "img" / "o0001.png").rotate(-7, Image.BICUBIC).save(tmp_path / "img" / "new-turned.png")
    _index(tmp_path / "img", ix, "--no-dedup-codes")
    again = find_duplicates(ix, options)
    assert len(coded) == 1 and again.summary["searched"] == 1
    group = next(g for g in again.groups if any(Path(m["path"]).name == "new-turned.png" for m in g["members"]))
    assert "o0001.png" in {Path(m["path"]).name for m in group["members"]}


def test_two_copy_families_joined_by_a_few_pairs_are_split_when_their_best_members_refuse_each_other():
    from retrieval.algorithms.dedup_bridges import checks_around, communities, family_bridges, kept_links

    fam = lambda base: [(base + i, base + j) for i in range(6) for j in range(i + 1, 6)]  # noqa: E731
    joins = [(0, 10), (1, 11), (2, 10)]   # each supported by its own family: no single pair is a bridge
    pairs = np.array(fam(0) + fam(10) + joins, np.int64)
    nodes, labels = communities(pairs)
    assert len(set(labels[nodes < 10])) == 1 and len(set(labels[nodes >= 10])) == 1
    assert labels[0] != labels[-1]
    checks = checks_around(pairs, pairs, pairs)
    assert {(a, b) for a, b in checks.tolist()} >= {(x, y) for x in (0, 1, 2) for y in (10, 11, 12)} - set(joins)
    assert all((a < 10) != (b < 10) for a, b in checks.tolist())   # only pairs across the two families
    refused = np.concatenate([pairs, checks])
    assert not kept_links(pairs, refused)[-3:].any() and kept_links(pairs, refused)[:-3].all()
    # the same families with their best members verified with each other: one group
    together = np.concatenate([pairs, checks])
    assert kept_links(together, together).all()
    assert not family_bridges(pairs, pairs)[1].any()   # nothing decided between them yet: nothing judged apart
    one = np.array(fam(0), np.int64)
    assert len(set(communities(one)[1])) == 1 and family_bridges(one, one)[0].shape == (0, 2)
