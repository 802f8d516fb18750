"""Webdataset / img2dataset shards of drawn shapes, and broken ones, for the shard tests and the Ray benchmark.

``make_shards`` writes what img2dataset writes: ``00000.tar`` (per sample ``KEY.jpg``, ``KEY.txt``, ``KEY.json``)
with ``00000.parquet`` beside it (``key``, ``status``, ``error_message``, ``url``, ``caption``, ``width``,
``height``, ``original_width``, ``original_height``, ``sha256``); each shard also lists failed downloads, which are
in the parquet only. ``make_bad_shards`` writes a truncated tar, a tar whose image member is not an image, one
whose json does not parse, and a file that is no tar at all; ``make_hostile_shards`` shards a careless or hostile
producer writes (duplicate keys, json keys no store takes as column names, json too deep or too big). Seeded and
deterministic.
"""
from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from clipdex.synthetic.shapes import COLORS, SHAPES, draw_shape


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: int = 1_700_000_000) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = mtime
    tar.addfile(info, io.BytesIO(data))


def _jpeg(shape: str, color: str, size: int, rng: random.Random) -> bytes:
    img = draw_shape(shape, COLORS[color], size=size, scale=rng.uniform(0.4, 0.8),
                     offset=(rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_shard(path: Path, samples: list[dict], failed: list[dict] = (), parquet: bool = True) -> None:
    """One shard: ``samples`` (dicts with key, jpg bytes, caption, optional json) into ``path``, and (``parquet``)
    img2dataset's table of successes and ``failed`` downloads (dicts with key, error_message) beside it."""
    with tarfile.open(path, "w") as tar:
        for s in samples:
            _add(tar, f"{s['key']}.jpg", s["jpg"])
            if s.get("caption") is not None:
                _add(tar, f"{s['key']}.txt", s["caption"].encode())
            _add(tar, f"{s['key']}.json", s["json"] if isinstance(s.get("json"), bytes)
                 else json.dumps(s.get("json", {"key": s["key"]})).encode())
    if not parquet:
        return
    rows = [{"key": s["key"], "status": "success", "error_message": None, "url": f"https://example.com/{s['key']}.jpg",
             "caption": s.get("caption"), "width": 64, "height": 64, "original_width": 64, "original_height": 64,
             "sha256": hashlib.sha256(s["jpg"]).hexdigest()} for s in samples]
    rows += [{"key": f["key"], "status": "failed_to_download", "error_message": f["error_message"],
              "url": f"https://example.com/{f['key']}.jpg", "caption": None, "width": None, "height": None,
              "original_width": None, "original_height": None, "sha256": None} for f in failed]
    schema = pa.schema([("key", pa.string()), ("status", pa.string()), ("error_message", pa.string()),
                        ("url", pa.string()), ("caption", pa.string()), ("width", pa.int64()),
                        ("height", pa.int64()), ("original_width", pa.int64()), ("original_height", pa.int64()),
                        ("sha256", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema), path.with_suffix(".parquet"))


def make_shards(root: str | Path, n_shards: int = 3, per_shard: int = 20, failed_per_shard: int = 2,
                size: int = 64, seed: int = 0) -> list[Path]:
    """An img2dataset output folder under ``root``: ``n_shards`` shards of ``per_shard`` captioned drawn shapes
    (keys ``SSSSSIIII`` as img2dataset numbers them) plus ``failed_per_shard`` failed downloads each; returns the
    tar paths."""
    rng = random.Random(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(n_shards):
        samples, failed = [], []
        for i in range(per_shard + failed_per_shard):
            key = f"{s:05d}{i:04d}"
            if i >= per_shard:
                failed.append({"key": key, "error_message": "HTTP Error 404: Not Found"})
                continue
            shape, color = rng.choice(SHAPES), rng.choice(sorted(COLORS))
            samples.append({"key": key, "jpg": _jpeg(shape, color, size, rng), "caption": f"a {color} {shape}",
                            "json": {"key": key, "shape": shape, "color": color, "exif": {"make": "clipdex"}}})
        path = root / f"{s:05d}.tar"
        write_shard(path, samples, failed)
        paths.append(path)
    return paths


def make_bad_shards(root: str | Path, seed: int = 1) -> dict[str, Path]:
    """Broken shards: ``truncated`` (cut inside its 4th of 6 samples), ``not_image`` (sample 1's jpg is text),
    ``bad_json`` (sample 2's json does not parse), ``not_tar`` (random bytes). Each good sample is a drawn shape."""
    rng = random.Random(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)

    def samples(prefix: str, n: int = 6) -> list[dict]:
        return [{"key": f"{prefix}{i:04d}", "jpg": _jpeg(rng.choice(SHAPES), rng.choice(sorted(COLORS)), 64, rng),
                 "caption": f"sample {i}"} for i in range(n)]

    out = {}
    good = samples("t")
    out["truncated"] = root / "truncated.tar"
    write_shard(out["truncated"], good, parquet=False)
    data = out["truncated"].read_bytes()
    offsets = [i for i in range(0, len(data), 512) if data[i:i + 5] == b"t0003"]
    out["truncated"].write_bytes(data[:offsets[0] + 700])
    bad = samples("n")
    bad[1]["jpg"] = b"this is not an image at all"
    out["not_image"] = root / "not_image.tar"
    write_shard(out["not_image"], bad, parquet=False)
    js = samples("j")
    js[2]["json"] = b"{not json"
    out["bad_json"] = root / "bad_json.tar"
    write_shard(out["bad_json"], js, parquet=False)
    out["not_tar"] = root / "not_tar.tar"
    out["not_tar"].write_bytes(bytes(rng.randrange(256) for _ in range(3000)))
    return out


HOSTILE_KEYS = {"we`ird": "tick", "a.b": "dot", "EXIF Make": "space", "_rowid": "reserved", "Path": "built-in",
                "ok": "fine"}


def make_hostile_shards(root: str | Path, seed: int = 2) -> dict[str, Path]:
    """Shards a careless or hostile producer writes, each of drawn shapes captioned ``KEY first`` (or ``second``):

    ``duplicates``: keys d0000..d0003 where d0001 comes back after d0002 and d0003 twice in a row (6 samples, 4
    keys, the second of each repeated key captioned ``second``); ``bad_keys``: b0000's json has ``HOSTILE_KEYS``
    (a backquote, a dot, a space, a reserved and a built-in name), b0001's a plain one; ``deep_json``: 5 samples,
    e0001's json nested 100,000 deep, e0003's 1.2 MB."""
    rng = random.Random(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)

    def sample(key: str, which: str = "first", js=None) -> dict:
        out = {"key": key, "jpg": _jpeg(rng.choice(SHAPES), rng.choice(sorted(COLORS)), 64, rng),
               "caption": f"{key} {which}"}
        if js is not None:
            out["json"] = js
        return out

    out = {name: root / f"{name}.tar" for name in ("duplicates", "bad_keys", "deep_json")}
    write_shard(out["duplicates"], [sample("d0000"), sample("d0001"), sample("d0002"), sample("d0001", "second"),
                                    sample("d0003"), sample("d0003", "second")], parquet=False)
    write_shard(out["bad_keys"], [sample("b0000", js=HOSTILE_KEYS), sample("b0001", js={"ok": "plain"})],
                parquet=False)
    deep = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    big = json.dumps({"blob": "x" * 1_200_000}).encode()
    write_shard(out["deep_json"], [sample("e0000"), sample("e0001", js=deep), sample("e0002"),
                                   sample("e0003", js=big), sample("e0004")], parquet=False)
    return out
