"""Cooperative cancellation (retrieval/cancel.py): work run under a token stops at its next checkpoint once the
token is cancelled; work run without one never stops; the library's long loops have checkpoints."""
from __future__ import annotations

import numpy as np
import pytest

from retrieval.ann.exact import exact_search
from retrieval.cancel import Cancelled, CancelToken, checkpoint, current
from retrieval.errors import ClipdexError


def test_a_token_is_current_only_inside_its_run_and_a_cancelled_one_starts_nothing():
    token = CancelToken()
    assert current() is None
    assert token.run(current) is token and current() is None
    checkpoint()                                   # no token: never stops
    token.cancel("the request timed out")
    token.cancel("a second reason is ignored")
    started = []
    with pytest.raises(Cancelled, match="the request timed out") as err:
        token.run(started.append, 1)
    assert started == [] and isinstance(err.value, ClipdexError)
    checkpoint()                                   # cancelling a token does not touch work outside it


def test_exact_search_stops_at_the_next_block_once_its_token_is_cancelled():
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((40, 8)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq = xb[:2]
    token = CancelToken()
    pulled = []

    def blocks():
        for i in range(0, 40, 4):
            pulled.append(i)
            if i == 12:
                token.cancel()                     # from the work itself: as a timeout would, between blocks
            yield np.arange(i, i + 4), xb[i:i + 4]

    with pytest.raises(Cancelled):
        token.run(exact_search, xq, blocks(), 5)
    assert pulled == [0, 4, 8, 12]                 # the block cancelled during was the last one scored
    pulled.clear()
    D, I = CancelToken().run(exact_search, xq, blocks(), 5)   # an uncancelled token changes nothing
    assert len(pulled) == 10 and list(I[0][:1]) == [0] and list(I[1][:1]) == [1]
