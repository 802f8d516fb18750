"""``clipdex serve INDEX [INDEX...]``: the HTTP API, the clip-retrieval routes and the search page."""
from __future__ import annotations

import click

from retrieval.errors import InvalidInput


@click.command("serve")
@click.argument("indexes", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; another than loopback needs --token or --no-auth.")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--token", default=None, envvar="CLIPDEX_TOKEN", help="Bearer token every API request must carry.")
@click.option("--no-auth", is_flag=True, help="Serve a non-loopback host without a token (anyone can search).")
@click.option("--workers-threads", "threads", default=4, show_default=True, type=int,
              help="Threads that run searches off the event loop.")
@click.option("--max-upload-mb", default=20.0, show_default=True, type=float, help="Largest query image.")
@click.option("--max-megapixels", default=40.0, show_default=True, type=float,
              help="Largest query image in pixels, refused from its header before it is decoded.")
@click.option("--query-timeout", default=30.0, show_default=True, type=float, help="Seconds a search may take.")
@click.option("--batch-size", default=32, show_default=True, type=int, help="Queries encoded together at most.")
@click.option("--allow-url-fetch", is_flag=True, help="Let clip-retrieval's image_url fetch remote images.")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Thumbnail cache (default: $XDG_CACHE_HOME/clipdex/thumbs).")
@click.option("--device", default=None, help="Model device (default: cuda when present, else cpu).")
@click.option("--refresh", "refresh_seconds", default=2.0, show_default=True, type=click.FloatRange(0),
              help="Seconds between checks for rows committed to the indexes while serving (0: serve the snapshot "
                   "opened at start).")
def serve(indexes, host, port, token, no_auth, threads, max_upload_mb, max_megapixels, query_timeout, batch_size,
          allow_url_fetch, cache_dir, device, refresh_seconds) -> None:
    """Serve INDEX(es) over HTTP: a search page at /, a JSON API (/docs), clip-retrieval's routes."""
    try:
        import uvicorn  # heavy optional dependency: the serve extra

        from clipdex.serve.app import create_app  # heavy optional dependency: fastapi (the serve extra)
        from clipdex.serve.config import ServeConfig  # heavy optional dependency: part of the serve package
        from clipdex.serve.server import server_options  # heavy optional dependency: uvicorn (the serve extra)
        from clipdex.serve.service import Service  # heavy optional dependency: part of the serve package
    except ImportError as exc:
        raise InvalidInput(f"clipdex serve needs the serve extra: pip install 'clipdex[serve]' ({exc.name} is "
                           "missing)") from None
    if not min(max_upload_mb, max_megapixels, query_timeout) > 0:
        raise InvalidInput("--max-upload-mb, --max-megapixels and --query-timeout must be positive")
    config = ServeConfig(indexes=list(indexes), host=host, port=port, token=token, no_auth=no_auth, threads=threads,
                         max_upload=int(max_upload_mb * (1 << 20)), max_pixels=max(1, int(max_megapixels * 1e6)),
                         query_timeout=query_timeout,
                         batch_size=batch_size, allow_url_fetch=allow_url_fetch, cache_dir=cache_dir, device=device,
                         refresh_seconds=refresh_seconds)
    service = Service(config.check())
    service.start()   # open the indexes and load the models now: a bad index is one error line
    app = create_app(config, service)
    click.echo(f"clipdex: serving {len(indexes)} index(es) on http://{host}:{port}/ (API docs at /docs)", err=True)
    uvicorn.run(app, **server_options(config))
