"""The index manifest, ``clipdex.json``: read it, check every field once, bring older versions up to date.

``read_manifest(path)`` returns the manifest as a dict whose fields have the types the rest of clipdex relies on,
or raises ``IndexFormatError`` with one line naming the file, what is wrong and what to do. It never writes.
"""
from __future__ import annotations

import json
from pathlib import Path

from retrieval.errors import IndexFormatError

FORMAT_VERSION = 1
MANIFEST = "clipdex.json"
BACKENDS = ("lance", "faiss")
FIX = "fix it by hand or restore it from a backup (the rows beside it are untouched)"


def _bad(file: Path, what: str, fix: str = FIX) -> IndexFormatError:
    return IndexFormatError(f"{file}: {what}; {fix}")


def _json_kind(value) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "true/false", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_manifest(index_dir: Path) -> tuple[dict, int]:
    """(checked and migrated manifest, the format version found in the file); ``IndexFormatError`` otherwise."""
    file = index_dir / MANIFEST
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise _bad(file, f"cannot be read ({exc.strerror or exc})", "check its permissions") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(file, f"is not UTF-8 text (bad byte at offset {exc.start})") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad(file, f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    version = check_manifest(file, manifest)
    return (migrate(manifest) if version < FORMAT_VERSION else manifest), version


def check_manifest(file: Path, m) -> int:
    """Check the manifest's fields and types; returns its format version (0 when absent: before versions)."""
    if not isinstance(m, dict):
        raise _bad(file, f"holds {_json_kind(m)}, not a JSON object")
    version = m.get("format_version", 0)
    if not _is_int(version) or version < 0:
        raise _bad(file, f"format_version is {_json_kind(version)} ({json.dumps(version)}), not a whole number "
                         f"like {FORMAT_VERSION}")
    if version > FORMAT_VERSION:
        raise IndexFormatError(f"{file}: format version {version} was written by a newer clipdex (this one reads up "
                               f"to {FORMAT_VERSION}); upgrade clipdex")
    if m.get("format", "clipdex") != "clipdex":
        raise _bad(file, f"format is {json.dumps(m['format'])}, not \"clipdex\"")
    for key in ("model", "dim", "backend"):
        if key not in m:
            raise _bad(file, f"has no {key!r} field")
    if not isinstance(m["model"], str) or not m["model"]:
        raise _bad(file, f"model is {_json_kind(m['model'])} ({json.dumps(m['model'])}), not a model spec string")
    if not _is_int(m["dim"]) or m["dim"] <= 0:
        raise _bad(file, f"dim is {_json_kind(m['dim'])} ({json.dumps(m['dim'])}), not a positive whole number")
    if m["backend"] not in BACKENDS:
        raise _bad(file, f"names an unknown backend {json.dumps(m['backend'])}; it must be one of "
                         f"{', '.join(BACKENDS)}", "fix it by hand or restore it from a backup")
    for key in ("metric", "created", "updated", "clipdex_version"):
        if key in m and not isinstance(m[key], str):
            raise _bad(file, f"{key} is {_json_kind(m[key])}, not a string")
    tables = m.get("tables", {})
    if not isinstance(tables, dict):
        raise _bad(file, f"tables is {_json_kind(tables)}, not an object of table name -> info")
    for name, info in tables.items():
        _check_table(file, name, info)
    return version


def _check_table(file: Path, name: str, info) -> None:
    where = f"tables.{name}"
    if not isinstance(info, dict):
        raise _bad(file, f"{where} is {_json_kind(info)}, not an object")
    if "rows" in info and (not _is_int(info["rows"]) or info["rows"] < 0):
        raise _bad(file, f"{where}.rows is {json.dumps(info['rows'])}, not a row count")
    ann = info.get("ann", {"kind": "flat", "params": {}})
    if not isinstance(ann, dict) or not isinstance(ann.get("kind", "flat"), str) \
            or not isinstance(ann.get("params", {}), dict):
        raise _bad(file, f"{where}.ann is {json.dumps(ann)[:80]}, not {{\"kind\": ..., \"params\": {{...}}}}")
    if "long_text" in info and not isinstance(info["long_text"], str):
        raise _bad(file, f"{where}.long_text is {_json_kind(info['long_text'])}, not a strategy name")
    partial = info.get("partial", [])
    if not (isinstance(partial, list) and all(isinstance(s, str) for s in partial)):
        raise _bad(file, f"{where}.partial is {json.dumps(info['partial'])[:80]}, not a list of source paths")


def migrate(manifest: dict) -> dict:
    """Bring an older manifest up to FORMAT_VERSION (explicit, one step per version)."""
    version = manifest.get("format_version", 0)
    if version == 0:  # pre-release manifests had no version and no per-table ann entry
        tables = {name: dict(info) for name, info in manifest.get("tables", {}).items()}
        manifest = {**manifest, "format_version": 1, "tables": tables}
        for info in manifest["tables"].values():
            info.setdefault("ann", {"kind": "flat", "params": {}})
    return manifest
