"""The ``clipdex`` command: a click group whose commands parse, call the library and print.

Every command is registered here, once. Every failure a user can act on is one line ``error: ...`` on stderr and
exit status 1: a bad option or argument (click's usage errors), a ``ClipdexError`` from the library, an I/O error
(a full disk, a file gone). Any other exception is one clipdex did not expect (a bug, or damage it does not yet
recognise): also one line, saying exactly that and how to get its traceback (``--debug`` or ``CLIPDEX_DEBUG=1``,
which then let it through).
"""
from __future__ import annotations

import errno
import logging
import os
import sys

import click

from cli import (
    classify_cmd,
    dedup_cmd,
    demo_cmd,
    eval_cmd,
    index_cmd,
    info_cmd,
    models_cmd,
    scale_cmd,
    search_cmd,
    serve_cmd,
    text_cmd,
    video_cmd,
)
from retrieval.errors import ClipdexError

DEBUG_ENV = "CLIPDEX_DEBUG"


def one_line(message: str) -> str:
    """A message on one line: its lines joined, runs of whitespace collapsed."""
    return " ".join(str(message).split())


def _debugging(ctx: click.Context | None) -> bool:
    flag = bool(ctx is not None and ctx.find_root().params.get("debug"))
    return flag or os.environ.get(DEBUG_ENV, "").lower() in ("1", "true", "yes")


class ClipdexGroup(click.Group):
    """The root group: turns every error into one line on stderr and an exit status (see the module's doc)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `clipdex`: the help, as click shows it
            exc.show()
            sys.exit(0)
        except click.ClickException as exc:  # usage and parameter errors: one line like every other error
            where = f" (see {exc.ctx.command_path} --help)" if getattr(exc, "ctx", None) is not None else ""
            click.echo(f"error: {one_line(exc.format_message())}{where}", err=True)
            sys.exit(1)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except ClipdexError as exc:
            click.echo(f"error: {one_line(exc)}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: committed rows are kept; run the same command again to resume", err=True)
            ctx.exit(130)
        except OSError as exc:
            if exc.errno == errno.EPIPE or _debugging(ctx):  # a closed pipe is click's to handle
                raise
            click.echo(f"error: {one_line(exc)}", err=True)
            ctx.exit(1)
        except Exception as exc:
            if _debugging(ctx):
                raise
            click.echo(f"error: unexpected {type(exc).__name__}: {one_line(exc)[:300]} (clipdex has no explanation "
                       f"for this one: run again with --debug or {DEBUG_ENV}=1 for the traceback, and report it)",
                       err=True)
            ctx.exit(1)


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
@click.option("--debug", is_flag=True, help=f"Show the traceback of an unexpected error (also {DEBUG_ENV}=1).")
@click.version_option(package_name="clipdex")
def cli(verbose: int, debug: bool) -> None:
    """clipdex: index images, videos and texts with CLIP, then search and classify them."""
    _setup_logging(verbose)


@cli.group()
def index() -> None:
    """Build or update an index: images, videos, texts or precomputed embeddings."""


index.add_command(index_cmd.images)
index.add_command(video_cmd.index_videos_cmd)
index.add_command(text_cmd.texts)
index.add_command(scale_cmd.embeddings)
for command in (scale_cmd.optimize, search_cmd.search, info_cmd.info, models_cmd.models, demo_cmd.demo,
                classify_cmd.classify, classify_cmd.train_reco_cmd, eval_cmd.eval_group, serve_cmd.serve,
                dedup_cmd.dedup):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="clipdex")


if __name__ == "__main__":
    main()
