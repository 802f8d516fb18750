"""Retake docs/serve.png, the README's screenshot of `clipdex serve`, in one command:

    python docs/make_serve_png.py            # needs the serve extra, playwright and Debian's chromium

It draws 120 pictures of coloured shapes (seeded: the same pictures every time) into /tmp/clipdex-demo/images,
indexes them with the shipped model `clipdex-tiny` through the clipdex CLI, starts `clipdex serve` on 127.0.0.1,
searches "a red circle" in the page with Playwright driving chromium, checks that the first five results are the
five red circles, and saves the page as docs/serve.png. Re-running reuses the index (indexing is incremental).
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote_plus

from clipdex.synthetic import make_shapes

ROOT = Path(__file__).resolve().parents[1]
QUERY = "a red circle"
MODEL = "clipdex-tiny"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def clipdex_cmd() -> list[str]:
    """The clipdex CLI of this environment: the installed script, else this checkout's cli.main."""
    exe = shutil.which("clipdex", path=str(Path(sys.executable).parent)) or shutil.which("clipdex")
    return [exe] if exe else [sys.executable, "-m", "cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, tries: int = 300) -> None:
    for _ in range(tries):  # bounded: up to 300 waits of 0.1 s for the model to load and the port to open
        if proc.poll() is not None:
            raise SystemExit(f"clipdex serve exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("clipdex serve did not answer /healthz")


def screenshot(url: str, out: Path) -> list[str]:
    """Search QUERY in the page, wait for every thumbnail, save the viewport; returns the result captions."""
    from playwright.sync_api import sync_playwright  # optional dependency of this script only

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
        page.goto(f"{url}/?q={quote_plus(QUERY)}")
        page.wait_for_selector("#results li.result")
        page.wait_for_function("Array.from(document.querySelectorAll('#results img'))"
                               ".every(i => i.complete && i.naturalWidth > 0)")
        captions = page.locator("#results li.result").all_inner_texts()
        page.screenshot(path=str(out))
        browser.close()
    return captions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/clipdex-demo", help="folder for the drawn images and the index")
    ap.add_argument("--out", default=str(ROOT / "docs" / "serve.png"))
    args = ap.parse_args()
    work = Path(args.work)
    images, index = work / "images", work / "shapes.clipdex"
    make_shapes(images, per_pair=5)
    cli = clipdex_cmd()
    subprocess.run([*cli, "index", "images", str(images), "--index", str(index), "--model", MODEL, "--workers", "0"],
                   check=True, cwd=ROOT)
    port = free_port()
    server = subprocess.Popen([*cli, "serve", str(index), "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, server)
        captions = screenshot(url, Path(args.out))
    finally:
        server.terminate()
        server.wait(timeout=30)
    top = [c for c in captions[:5] if "/circle/red_" in c.replace("\n", "")]
    if len(top) != 5:
        raise SystemExit(f"the first five results are not the five red circles: {captions[:5]}")
    print(f"wrote {args.out}: {len(captions)} results, the first five the red circles")


if __name__ == "__main__":
    main()
