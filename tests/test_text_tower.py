"""The torch-free text query path: the BPE tokenizer gives open_clip's tokens, the exported numpy text tower gives
the torch encoder's vectors (to 1e-4), and ``clipdex search INDEX "text"`` uses it without importing torch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from indexers.images import ImageIndexOptions, index_images
from retrieval.encode.bpe import load_bpe
from retrieval.encode.text import encode_long_texts
from retrieval.encode.text_tower import ensure_text_tower, export_text_tower, load_tower_encoder, query_tower, tower_dir
from retrieval.index.directory import create_index
from retrieval.io.sources import discover

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["a photo of a cat", "Ça va? naïve café 東京 🙂 &amp; <b>bold</b>\t\n  tabs", "don't stop-me now 1234",
         "ÀÉÎ mixed CASE words, punctuation!!! (and) [brackets] {braces}", "x", "<start_of_text> literal",
         " ".join(["word"] * 200), "3.14159 e=mc^2 #hashtag @user http://example.com/a_b?c=d"]


@pytest.fixture
def tower(tiny, tmp_path, monkeypatch):
    """The tiny model's tower, exported to a private cache."""
    monkeypatch.setenv("CLIPDEX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CLIPDEX_TEXT_TOWER", raising=False)
    ensure_text_tower(tiny)
    enc = load_tower_encoder(str(tiny.spec))
    assert enc is not None
    return enc


def test_bpe_gives_open_clips_tokens(tiny):
    bpe = load_bpe()
    for text in TEXTS + [""]:
        assert bpe.encode(text) == tiny.tokenizer.encode(text), text
    assert (bpe.sot_token_id, bpe.eot_token_id) == (tiny.tokenizer.sot_token_id, tiny.tokenizer.eot_token_id)


@pytest.mark.parametrize("strategy", ["chunk", "truncate"])
def test_tower_vectors_equal_torch(tiny, tower, strategy):
    a = encode_long_texts(tiny, TEXTS, strategy)
    b = encode_long_texts(tower, TEXTS, strategy)
    np.testing.assert_allclose(b.vectors, a.vectors, atol=1e-4)
    assert np.array_equal(a.n_tokens, b.n_tokens) and np.array_equal(a.n_chunks, b.n_chunks)
    assert b.vectors.dtype == np.float32 and np.allclose(np.linalg.norm(b.vectors, axis=1), 1, atol=1e-5)


def test_tower_is_used_only_where_it_applies(tiny, tower, tmp_path, monkeypatch):
    manifest = {"model": str(tiny.spec), "tables": {"texts": {"long_text": "longclip"}}}
    assert query_tower(manifest, "images", None, None) is not None
    assert query_tower(manifest, "images", None, "cuda") is None  # the torch encoder on the GPU
    assert query_tower(manifest, "texts", None, "cpu") is None  # Long-CLIP needs the torch model
    assert query_tower(manifest, "images", "longclip", "cpu") is None
    assert query_tower({"model": "none"}, "images", None, None) is None
    monkeypatch.setenv("CLIPDEX_TEXT_TOWER", "torch")
    assert query_tower(manifest, "images", None, None) is None
    monkeypatch.delenv("CLIPDEX_TEXT_TOWER")
    folder = tower_dir(str(tiny.spec))
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "spec": "something-else"}))
    assert query_tower(manifest, "images", None, None) is None  # a tower of another model is never used
    (folder / "meta.json").write_text("{not json")
    assert load_tower_encoder(str(tiny.spec)) is None  # damaged: ignored, the torch path answers


def test_cli_text_search_skips_torch_with_the_same_results(tiny, tower, shapes_dir, tmp_path):
    path = tmp_path / "ix.clipdex"
    with create_index(path, model="clipdex-tiny") as ix:
        index_images(ix, discover([str(shapes_dir)]), ImageIndexOptions(workers=0, optimize=False))
    probe = ("import sys, runpy; sys.argv = ['clipdex', 'search', sys.argv[1], sys.argv[2], '--json', '-k', '8']\n"
             "try:\n    runpy.run_module('cli.main', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print(json.dumps(sorted(m for m in ('torch', 'open_clip') if m in sys.modules)))")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CLIPDEX_CACHE": os.environ["CLIPDEX_CACHE"]}
    runs = {}
    for engine in ("auto", "torch"):
        out = subprocess.run([sys.executable, "-c", "import json\n" + probe, str(path), "a green star"],
                             env={**env, "CLIPDEX_TEXT_TOWER": engine}, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        *rows, heavy = out.stdout.strip().splitlines()
        runs[engine] = ([json.loads(r) for r in rows], json.loads(heavy))
    assert runs["auto"][1] == [] and runs["torch"][1] == ["open_clip", "torch"]
    fast, slow = runs["auto"][0], runs["torch"][0]
    assert len(fast) == 8 and [r["id"] for r in fast] == [r["id"] for r in slow]
    np.testing.assert_allclose([r["score"] for r in fast], [r["score"] for r in slow], atol=1e-4)


def test_a_model_it_cannot_reproduce_keeps_the_torch_path(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPDEX_CACHE", str(tmp_path / "cache"))
    other = SimpleNamespace(spec=tiny.spec, model=SimpleNamespace(visual=None), tokenizer=tiny.tokenizer,
                            device="cpu")  # no text transformer of the supported kind (an HF text tower, say)
    assert export_text_tower(other, tmp_path / "x") is False and not (tmp_path / "x").exists()
    ensure_text_tower(other)
    assert (tower_dir(str(tiny.spec)) / "unsupported").exists() and load_tower_encoder(str(tiny.spec)) is None
    ensure_text_tower(tiny)  # marked: not tried again
    assert load_tower_encoder(str(tiny.spec)) is None


def test_a_second_exporter_finds_the_first_ones_tower(tiny, tower, monkeypatch):
    folder = tower_dir(str(tiny.spec))
    assert export_text_tower(tiny, folder) is None  # the folder exists: nothing replaced, nothing marked
    assert not (folder / "unsupported").exists() and load_tower_encoder(str(tiny.spec)) is not None
