"""Search settings set for the calling thread only (``Store.set_search_params(..., persist=False)``).

Tuning tries settings, and a dedup run lowers the lists probed for its self-join, while a service may answer other
searches on the same open index from other threads: those must keep the table's own settings. So a temporary
setting belongs to the thread that set it."""
from __future__ import annotations

import threading


class ThreadOverrides:
    """table name -> search params, one mapping per thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _map(self) -> dict[str, dict]:
        if not hasattr(self._local, "params"):
            self._local.params = {}
        return self._local.params

    def get(self, name: str) -> dict | None:
        """This thread's params for ``name``, or None (then the table's own apply)."""
        return self._map().get(name)

    def set(self, name: str, params: dict | None) -> None:
        """Set this thread's params for ``name``; None drops them."""
        if params is None:
            self._map().pop(name, None)
        else:
            self._map()[name] = dict(params)
