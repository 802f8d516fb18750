"""The duplicates view of ``clipdex serve``: ``GET /api/dedup`` on both backends (groups as ``clipdex dedup`` finds
them, paged, thumbnails, the keep suggestion, 4xx on bad input) and the page at ``/dedup`` in Chromium."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("imagehash")

from clipdex.synthetic.dedup import make_dedup_images  # noqa: E402
from retrieval.query.dedup import DedupOptions, find_duplicates  # noqa: E402
from tests.serve_helpers import client, live_app  # noqa: E402

Q = "k=20&min_score=0.2&kinds=exact,near"   # clipdex-tiny barely sees a framed copy as the same picture
CHROMIUM = Path("/usr/bin/chromium")


def _build(root: Path, backend: str) -> Path:
    from click.testing import CliRunner

    from cli.main import cli

    if not (root / "img").exists():
        make_dedup_images(root / "img", n_originals=2, seed=5, negatives=1, transforms=("jpeg", "crop"))
    ix = root / f"{backend}.clipdex"
    res = CliRunner().invoke(cli, ["index", "images", str(root / "img"), "--index", str(ix), "--model",
                                   "clipdex-tiny", "--workers", "0", "--backend", backend])
    assert res.exit_code == 0, res.output
    return ix


@pytest.fixture(scope="module", params=["lance", "faiss"])
def served(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("dedup-serve")
    ix = _build(root, request.param)
    expected = find_duplicates(ix, DedupOptions(k=20, min_score=0.2, keep="largest"))
    with client(ix, root / "cache") as c:
        yield c, ix, expected


def _names(groups: list[dict]) -> list[list[str]]:
    return sorted(sorted(Path(m["path"]).name for m in g["members"]) for g in groups)


def test_the_api_lists_the_groups_clipdex_dedup_finds_with_thumbnails_and_the_remove_list(served):
    c, ix, expected = served
    want = [g for g in expected.groups if g["kind"] in ("exact", "near")]
    assert len(want) >= 2
    r = c.get(f"/api/dedup?{Q}&keep=largest")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == len(want) and _names(body["groups"]) == _names(want)
    assert body["summary"]["rows"] == expected.summary["rows"]
    for g in body["groups"]:
        assert g["kind"] in ("exact", "near") and g["pairs"] and all("clip" in p and p["kind"] for p in g["pairs"])
        kept = [m for m in g["members"] if m["id"] == g["keep"]]
        assert len(kept) == 1 and sorted(g["remove"]) == sorted(m["path"] for m in g["members"] if m is not kept[0])
        for m in g["members"]:
            thumb = c.get(m["thumbnail"])
            assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    removed = {p for g in body["groups"] for p in g["remove"]}
    assert removed == {p for p in expected.remove_list() if any(p == m["path"] for g in want for m in g["members"]
                                                                if m["id"] != g["keep"])}
    assert all(Path(p).exists() for p in removed)     # a suggestion: nothing deleted


def test_the_api_pages_its_groups(served):
    c, _, _ = served
    whole = c.get(f"/api/dedup?{Q}").json()
    first, second = (c.get(f"/api/dedup?{Q}&limit=1&offset={o}").json() for o in (0, 1))
    assert first["total"] == second["total"] == whole["total"] >= 2
    assert [first["groups"][0]["ids"], second["groups"][0]["ids"]] == [g["ids"] for g in whole["groups"][:2]]
    assert "remove" not in whole["groups"][0]      # no keep, no suggestion


@pytest.mark.parametrize("query, status, words", [
    ("table=frames", 404, "no table"), ("table=errors", 404, "no table"), ("kinds=twins", 400, "unknown kind"),
    ("rule=best", 400, "unknown rule"), ("keep=biggest", 400, "keep policy"), ("k=0", 422, "k"),
    ("min_score=2", 422, "min_score"), ("index=nope", 404, "nope"), ("limit=1000", 422, "limit")])
def test_bad_input_is_a_4xx_json_error(served, query, status, words):
    c, _, _ = served
    r = c.get(f"/api/dedup?{query}")
    assert r.status_code == status, r.text
    assert words in r.json()["error"] and r.json()["status"] == status


def test_the_page_is_served(served):
    c, _, _ = served
    r = c.get("/dedup")
    assert r.status_code == 200 and "dedup.js" in r.text
    assert c.get("/static/dedup.js").status_code == 200


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_the_page_shows_a_group_per_row_side_by_side_with_the_keep_suggestion(tmp_path):
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    ix = _build(tmp_path, "lance")
    expected = [g for g in find_duplicates(ix, DedupOptions(k=20, min_score=0.2)).groups
                if g["kind"] in ("exact", "near")]
    errors: list[str] = []
    with live_app([str(ix)], tmp_path / "cache") as base:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{base}/dedup")
            page.wait_for_function("document.getElementById('table').value === 'images'")
            page.get_by_label("Kinds").fill("exact,near")
            page.get_by_label("k", exact=True).fill("20")
            page.get_by_label("Min score").fill("0.2")
            page.get_by_label("Keep").select_option("largest")
            page.get_by_role("button", name="Find duplicates").click()
            page.wait_for_selector("#groups li.group")
            page.wait_for_function("Array.from(document.querySelectorAll('#groups img')).every(i => i.complete "
                                   "&& i.naturalWidth > 0)")
            rows = page.locator("#groups li.group")
            assert rows.count() == len(expected)
            for i in range(rows.count()):
                cards = rows.nth(i).locator(".member")
                boxes = [cards.nth(j).bounding_box() for j in range(cards.count())]
                assert len({round(b["y"]) for b in boxes}) == 1 and len(boxes) >= 2   # side by side
                assert rows.nth(i).locator(".member.keep").count() == 1
                assert "clip " in rows.nth(i).locator(".pairs").inner_text()
            shown = sorted(sorted(Path(x.split(" ", 1)[1]).name for x in rows.nth(i).locator(".meta").all_inner_texts())
                           for i in range(rows.count()))     # "keep PATH" / "remove PATH"
            assert shown == _names(expected)
            removal = page.locator("#remove-list").input_value().splitlines()
            assert len(removal) == sum(g["size"] - 1 for g in expected)
            page.screenshot(path=str(tmp_path / "dedup.png"))
            page.get_by_label("Kinds").fill("twins")
            page.get_by_role("button", name="Find duplicates").click()
            page.get_by_role("alert").wait_for(state="visible")
            assert "unknown kind" in page.get_by_role("alert").inner_text()
            browser.close()
    assert not errors, errors
