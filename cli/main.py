"""The ``clipdex`` command: a click group whose commands parse, call the library and print.

Library errors (``ClipdexError``) become one line on stderr and a non-zero exit; nothing else is caught, so a
bug still shows its traceback.
"""
from __future__ import annotations

import logging
import sys

import click

from retrieval.errors import ClipdexError


class ClipdexGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ClipdexError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: committed rows are kept; run the same command again to resume", err=True)
            ctx.exit(130)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(verbose: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    for name in ("retrieval", "indexers", "cli"):
        logging.getLogger(name).setLevel(level)


@click.group(cls=ClipdexGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
@click.version_option(package_name="clipdex")
def cli(verbose: int) -> None:
    """clipdex: index images, videos and texts with CLIP, then search and classify them."""
    _setup_logging(verbose)


def _register() -> None:
    from cli import demo, index_cmd, info_cmd, models_cmd, scale_cmds, search_cmd, video_cmds

    cli.add_command(index_cmd.index)
    index_cmd.index.add_command(video_cmds.index_videos_cmd)
    index_cmd.index.add_command(scale_cmds.embeddings)
    cli.add_command(scale_cmds.optimize)
    cli.add_command(search_cmd.search)
    cli.add_command(info_cmd.info)
    cli.add_command(models_cmd.models)
    cli.add_command(demo.demo)
    from cli import classify_cmd

    cli.add_command(classify_cmd.classify)
    cli.add_command(classify_cmd.train_reco_cmd)
    from cli import serve_cmd  # the CLI defers its command modules; serve imports fastapi only when run

    cli.add_command(serve_cmd.serve)


_register()


def main() -> None:
    cli(prog_name="clipdex")


if __name__ == "__main__":
    main()
