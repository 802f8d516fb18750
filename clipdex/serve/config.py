"""The service's options and the rule that keeps it private by default."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from retrieval.errors import InvalidInput

MAX_K = 1000            # results one request may ask for
MAX_OFFSET = 10_000     # deepest page: offset + k rows are fetched and the first offset dropped
MAX_SIZE = 1024         # largest thumbnail edge
MAX_T = 1e7             # latest time (seconds, 115 days) a video thumbnail may ask for


def default_cache_dir() -> Path:
    """Thumbnails live outside the indexes (the service never writes into an index): $XDG_CACHE_HOME/clipdex."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clipdex" / "thumbs"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServeConfig:
    indexes: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None          # bearer token; required (or no_auth) on a non-loopback host
    no_auth: bool = False
    threads: int = 4                  # search threads (off the event loop)
    max_upload: int = 20 << 20        # bytes of an uploaded or base64 image
    max_pixels: int = 40_000_000      # pixels of a query image, checked before it is decoded (3-4 bytes each)
    header_timeout: float = 10.0      # seconds a client has to send a request's headers
    query_timeout: float = 30.0       # seconds a search or a classification may take before a 504 (then cancelled)
    shutdown_timeout: float = 3.0     # seconds a stopping server lets requests in flight finish before cancelling
    max_classes: int = 1000           # classes one /api/classify request may name
    max_class_chars: int = 200        # characters of one class name
    max_prompts: int = 80_000         # prompts encoded for one classifier: classes x templates (long names count more)
    batch_size: int = 32              # queries encoded together at most
    batch_wait_ms: float = 0.0        # how long an idle model waits for more queries (busy: they queue anyway)
    allow_url_fetch: bool = False     # clip-retrieval's image_url: only with this flag, and never to loopback
    cache_dir: Path | None = None
    device: str | None = None
    refresh_seconds: float = 2.0      # how often the indexes are checked for new commits (0: never)

    def check(self) -> "ServeConfig":
        if not self.indexes:
            raise InvalidInput("give at least one index to serve")
        if not is_loopback(self.host) and not self.token and not self.no_auth:
            raise InvalidInput(f"--host {self.host} is reachable from other machines: give --token TOKEN "
                               "(clients send 'Authorization: Bearer TOKEN') or --no-auth to serve it openly")
        if self.token is not None and not self.token.strip():
            raise InvalidInput("--token must not be empty")
        if not 0 < self.port < 65536:
            raise InvalidInput(f"--port must be between 1 and 65535, got {self.port}")
        if self.threads < 1 or self.batch_size < 1:
            raise InvalidInput("--workers-threads and the batch size must be at least 1")
        if self.max_upload < 1 or self.max_pixels < 1 or not self.header_timeout > 0:
            raise InvalidInput("the upload, pixel and header-time limits must be positive")
        if min(self.max_classes, self.max_class_chars, self.max_prompts) < 2 or not self.shutdown_timeout >= 0:
            raise InvalidInput("the classification limits must be at least 2 and the shutdown timeout not negative")
        self.cache_dir = Path(self.cache_dir) if self.cache_dir else default_cache_dir()
        return self
