"""The README's Python API names stay what they say, whatever was imported before them."""
from __future__ import annotations

import subprocess
import sys


def test_retrieval_search_is_the_function_even_after_the_query_modules_were_imported():
    code = ("import retrieval.query.search, retrieval.query.video\n"
            "from retrieval import search, load_encoder, create_index, open_index\n"
            "import retrieval.query.search as q\n"
            "assert search is q.search and callable(load_encoder), search\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_importing_the_library_does_not_import_torch():
    out = subprocess.run([sys.executable, "-c", "import retrieval, sys; print('torch' in sys.modules)"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
