"""The one way a benchmark script saves its figures: ``benchmarks/results/<name>.json``, the result wrapped in the
same envelope everywhere (which benchmark, the command that reproduces it, when, on what machine), so that any
result file says how it was made."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """What the figures were measured on: CPU count and kind, OS, Python."""
    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "platform": platform.platform(), "python": platform.python_version()}


def command() -> str:
    """The command line that ran this benchmark, as a user would type it from the repository root."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(RESULTS.parent.parent)
    except ValueError:
        pass
    return " ".join(["python", str(script), *sys.argv[1:]])


def save_result(result: dict, path: str | Path | None = None, name: str | None = None) -> Path:
    """Write ``result`` to ``path`` (default ``benchmarks/results/<name>.json``) inside the envelope
    ``{"benchmark", "command", "written", "machine", ...result}``; keys of ``result`` win. Returns the path."""
    path = Path(path) if path is not None else RESULTS / f"{name}.json"
    envelope = {"benchmark": name or path.stem, "command": command(),
                "written": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "machine": machine()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**envelope, **result}, indent=1) + "\n", encoding="utf-8")
    return path
