"""Run in every Ray worker of the Ray tests (``ray.init(runtime_env={"worker_process_setup_hook":
"tests.ray_hooks.setup"})``), before any task: what a worker decodes and embeds, logged; and worker deaths at
chosen events. Steered by the environment the workers inherit from the driver:

- ``CLIPDEX_RAY_LOG``: a folder; each worker appends the content hash of every image it decodes to
  ``decode.<pid>`` and the row count of every batch it embeds to ``embed.<pid>``.
- ``CLIPDEX_RAY_KILL``: a folder; the first worker to write Lance fragments (``write_rows``: images and texts
  actors; ``write_batches``: videos actors and embeddings tasks) SIGKILLs itself right after writing them
  (the fragments stay on disk, never committed), and the first worker to decode its third image SIGKILLs itself
  before decoding it. Each happens once per folder (a marker file made with O_EXCL).
"""
from __future__ import annotations

import os
import signal

_counts = {"decode": 0}


def _once(folder: str, name: str) -> bool:
    try:
        os.close(os.open(os.path.join(folder, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def _log(name: str, line: str) -> None:
    with open(os.path.join(os.environ["CLIPDEX_RAY_LOG"], f"{name}.{os.getpid()}"), "a") as f:
        f.write(line + "\n")


def setup() -> None:
    from indexers import shards
    from retrieval.encode import encoder
    from retrieval.io.imageprep import content_hash
    from retrieval.store import lance_fragments

    log, kill = os.environ.get("CLIPDEX_RAY_LOG"), os.environ.get("CLIPDEX_RAY_KILL")
    prepare, encode, write = shards.decode_with_codes, encoder.ClipEncoder.encode_prepared, lance_fragments.write_rows
    write_stream = lance_fragments.write_batches

    def decode_with_codes(data, prep, code):
        _counts["decode"] += 1
        if kill and _counts["decode"] == 3 and _once(kill, "decode"):
            os.kill(os.getpid(), signal.SIGKILL)
        if log:
            _log("decode", content_hash(data))
        return prepare(data, prep, code)

    def encode_prepared(self, pixels):
        if log:
            _log("embed", str(len(pixels)))
        return encode(self, pixels)

    def write_rows(*args, **kwargs):
        out = write(*args, **kwargs)
        if kill and _once(kill, "write"):
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    def write_batches(*args, **kwargs):
        out = write_stream(*args, **kwargs)
        if kill and _once(kill, "write"):
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    shards.decode_with_codes = decode_with_codes
    lance_fragments.write_batches = write_batches
    encoder.ClipEncoder.encode_prepared = encode_prepared
    lance_fragments.write_rows = write_rows


def logged(folder, name: str) -> list[str]:
    """Every line the workers logged under ``name`` (``decode`` or ``embed``) in ``folder``."""
    out: list[str] = []
    for f in sorted(os.listdir(folder)):
        if f.startswith(name + "."):
            with open(os.path.join(folder, f)) as fh:
                out += fh.read().split()
    return out
