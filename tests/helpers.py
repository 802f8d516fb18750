"""Helpers shared by the tests (imported as ``tests.helpers``; fixtures live in conftest.py, data generators in
:mod:`clipdex.synthetic`): the exact top-k oracle, top-k comparison up to ties, and an "index unchanged" digest
(notebooks: tests/notebooks.py)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def brute_force(xq: np.ndarray, xb: np.ndarray, k: int, ids: np.ndarray | None = None):
    """The exact oracle: (D, I) (q, k) of the k largest inner products over the rows of ``xb``, reported as
    ``ids[row]`` (default: the row number)."""
    S = xq @ xb.T
    order = np.argsort(-S, axis=1, kind="stable")[:, :k]
    ids = np.arange(len(xb)) if ids is None else np.asarray(ids)
    return np.take_along_axis(S, order, 1), ids[order]


def assert_same_topk(D, I, D_ref, I_ref, atol=1e-5):
    """Same top-k up to ties: scores equal row by row, and ids equal wherever the score is not tied."""
    np.testing.assert_allclose(D, D_ref, atol=atol)
    for r in range(len(I)):
        for c in range(I.shape[1]):
            tied = np.sum(np.abs(D_ref[r] - D_ref[r, c]) < atol) > 1
            if not tied:
                assert I[r, c] == I_ref[r, c], (r, c)


def tree_digest(path) -> dict:
    """{relative path: sha1} of every file under ``path``: equal before and after = the index is unchanged."""
    out = {}
    for root, _, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, path)] = hashlib.sha1(f.read()).hexdigest()
    return out


_KILL_PRELUDE = """
import os, signal, sys
from retrieval.index import directory
real, seen, landed = directory.Index.add_rows, [0], [0]
at, when = int(os.environ.get("KILL_AT") or 0), os.environ.get("KILL_WHEN", "after")
watched = os.environ.get("KILL_TABLE") or "images"
def kill():
    if os.environ.get("KILL_LOG"):
        with open(os.environ["KILL_LOG"], "w") as f:
            f.write(str(landed[0]))  # the watched table's rows committed when the process dies
    os.kill(os.getpid(), signal.SIGKILL)
def add_rows(self, table, rows):
    if table == watched:
        seen[0] += 1
        if seen[0] == at and when == "before":
            kill()  # the commit in flight is lost
    real(self, table, rows)
    if table == watched:
        landed[0] += rows.num_rows
        if seen[0] == at:
            kill()  # the commit landed; nothing after it did
directory.Index.add_rows = add_rows
real_frags = directory.Index.commit_fragments
def commit_fragments(self, table, fragments):  # the Ray engine's commits: fragments its workers wrote
    if table == watched:
        seen[0] += 1
        if seen[0] == at and when == "before":
            kill()
    n = real_frags(self, table, fragments)
    if table == watched:
        landed[0] += n
        if seen[0] == at:
            kill()
    return n
directory.Index.commit_fragments = commit_fragments
"""

CLI_MAIN = """
from cli.main import main
sys.argv[0] = "clipdex"
main()
"""


def kill_at_commit(main_code: str = CLI_MAIN) -> str:
    """Source for ``python -c``: ``Index.add_rows`` (and ``Index.commit_fragments``, the Ray engine's) patched to
    SIGKILL the process at the ``KILL_AT``-th commit of the ``KILL_TABLE`` table (environment, default ``images``;
    ``KILL_WHEN=before`` loses that commit, ``after``, the default, keeps it; ``KILL_LOG`` names a file that gets
    the rows of that table committed when it dies; no ``KILL_AT``: no kill), then ``main_code`` (by default the
    clipdex CLI with the process's arguments). The kill point is an event, not a moment found by polling."""
    return _KILL_PRELUDE + main_code
