"""The search page in a real browser (Playwright driving Debian's chromium) against a live `clipdex serve` on
loopback: type a query and see thumbnails, "more like this", an image query by upload, and a bad filter shown as
an error in the page. Screenshots go to the test's tmp dir."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("playwright")

from tests.serve_helpers import build_photo_index, live_app  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                 "(apt-get install chromium; .ci/run installs it)")]


@pytest.fixture(scope="module")
def server(tmp_path_factory, shapes_dir):
    """A live server on 127.0.0.1 in a thread; stopped at the end of the module."""
    root = tmp_path_factory.mktemp("browser")
    idx, photos = build_photo_index(root, shapes_dir)
    indexes = [str(idx)]
    if importlib.util.find_spec("av") is not None:   # a second index: one WebM video chromium can play
        from click.testing import CliRunner

        from cli.main import cli
        from clipdex.synthetic.videos import make_video

        make_video(root / "clips" / "c.webm", 63, 4.0, 10)
        r = CliRunner().invoke(cli, ["index", "videos", str(root / "clips"), "--index", str(root / "clips.clipdex"),
                                     "--model", "clipdex-tiny", "--workers", "0", "--fps", "2"])
        assert r.exit_code == 0, r.output
        indexes.append(str(root / "clips.clipdex"))
    with live_app(indexes, root / "cache") as base:
        yield base, photos


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, errors     # no JavaScript error on any flow


def loaded_thumbnails(page) -> int:
    return page.evaluate("Array.from(document.querySelectorAll('#results img'))"
                         ".filter(i => i.complete && i.naturalWidth > 0).length")


def test_typing_a_query_shows_thumbnails_and_more_like_this_finds_that_image_first(server, page, tmp_path):
    url, _ = server
    page.goto(url + "/")
    assert not page.locator("#query-image").is_visible()   # shown only while an image is the query
    page.get_by_label("Search text").fill("a red circle")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results li.result")
    page.wait_for_function("document.querySelectorAll('#results img').length > 0 && "
                           "Array.from(document.querySelectorAll('#results img')).every(i => i.complete)")
    assert loaded_thumbnails(page) >= 1 and "q=a+red+circle" in page.url
    page.screenshot(path=str(tmp_path / "text-query.png"))
    assert page.locator("#results li.result").count() == 30          # one page
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")   # infinite scroll: the rest of the 48
    page.wait_for_function("document.querySelectorAll('#results li.result').length === 48")
    ranks = page.locator("#results .score").all_inner_texts()
    assert [int(r.split()[0][1:]) for r in ranks] == list(range(1, 49))
    page.evaluate("window.scrollTo(0, 0)")
    third = page.locator("#results li.result").nth(2)
    target = third.get_attribute("data-id")
    third.get_by_role("button", name="More like").click()
    page.wait_for_function(f"new URLSearchParams(location.search).get('like') === '{target}' && "
                           "document.querySelector('#results li.result') !== null")
    first = page.locator("#results li.result").first
    assert first.get_attribute("data-id") == target and "score 1.000" in first.inner_text()
    page.reload()   # the URL holds the query: reloading shows the same results
    page.wait_for_selector("#results li.result")
    assert page.locator("#results li.result").first.get_attribute("data-id") == target


def test_an_uploaded_image_finds_itself_first(server, page, tmp_path):
    url, photos = server
    probe = photos / "triangle" / "blue_1.png"
    page.goto(url + "/")
    page.get_by_label("Image query").set_input_files(str(probe))
    page.wait_for_selector("#results li.result")
    first = page.locator("#results li.result").first
    assert str(probe) in first.inner_text() and "score 1.000" in first.inner_text()
    assert page.locator("#query-image").is_visible()
    page.screenshot(path=str(tmp_path / "image-query.png"))


def test_a_video_result_plays_from_its_best_moment(server, page, tmp_path):
    pytest.importorskip("av")
    from clipdex.synthetic.videos import scene_still as still

    url, _ = server
    page.goto(url + "/?index=clips&table=videos")
    page.wait_for_function("document.getElementById('table').value === 'videos'")
    video = {"seed": 63, "size": (64, 48)}
    page.get_by_label("Image query").set_input_files(still(video, 2.5, tmp_path))
    page.wait_for_selector("#results li.result")
    first = page.locator("#results li.result").first
    t = float(first.get_attribute("data-t"))
    assert "c.webm" in first.inner_text() and " at 0:" in first.inner_text()
    assert t >= 1.0   # not the start: playing from 0 would not pass for playing from t
    page.evaluate("document.getElementById('player-video').addEventListener('playing', "
                  "e => { window.startedAt = e.target.currentTime; }, { once: true })")
    first.get_by_role("button", name="Play").click()
    assert page.get_by_role("dialog").is_visible()
    page.wait_for_function("window.startedAt !== undefined")
    assert abs(page.evaluate("window.startedAt") - t) < 0.3
    page.screenshot(path=str(tmp_path / "video.png"))


def test_a_bad_filter_is_shown_as_an_error_in_the_page(server, page, tmp_path):
    url, _ = server
    page.goto(url + "/")
    page.get_by_label("Filter").fill("read_csv('/etc/passwd') IS NOT NULL")
    page.get_by_label("Search text").fill("a square")
    page.get_by_role("button", name="Search").click()
    alert = page.get_by_role("alert")
    alert.wait_for(state="visible")
    assert alert.inner_text().startswith("bad --where filter") and "root:" not in page.content()
    assert page.locator("#results li.result").count() == 0
    page.screenshot(path=str(tmp_path / "bad-filter.png"))
    if os.environ.get("CLIPDEX_SCREENSHOTS"):   # for the README: CLIPDEX_SCREENSHOTS=docs pytest ...
        page.get_by_label("Filter").fill("")
        page.get_by_label("Search text").fill("a red circle")
        page.keyboard.press("Enter")
        page.wait_for_function("Array.from(document.querySelectorAll('#results img')).filter(i => i.complete && "
                               "i.naturalWidth > 0).length >= 8")
        page.screenshot(path=str(Path(os.environ["CLIPDEX_SCREENSHOTS"]) / "serve.png"))
