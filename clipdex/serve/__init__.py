"""``clipdex serve``: a read-only HTTP service over one or more indexes (FastAPI, the ``serve`` extra).

- ``config``: the service's options (``ServeConfig``) and the bind/auth rule;
- ``registry``: the served indexes, opened read-only once, their encoders loaded once;
- ``batcher``: a small dynamic batcher that encodes queries arriving together in one call, on its own thread;
- ``queries``: a search request -> query vector (text, image, vector, more-like-this, negatives) -> result rows;
- ``media``: thumbnails (cached on disk, ETag) and original files, only for rows of a served index;
- ``bodies``: every request body read one way: one JSON parser bounded in depth, values and numbers, or form fields;
- ``api``, ``compat``: clipdex's own JSON API and the clip-retrieval back end's routes;
- ``app``: ``create_app(config)``, errors as JSON bodies, bearer auth, metrics; ``static/``: the search page;
- ``server``: the options ``clipdex serve`` runs uvicorn with (a deadline on each request's headers, bounded headers).
"""
