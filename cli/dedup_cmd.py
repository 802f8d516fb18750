"""``clipdex dedup INDEX``: groups of near-duplicates (exact, near, similar, contained) as a table, JSON lines or
CSV on stdout, a summary on stderr, and with ``--keep`` a list of files to remove (nothing is ever deleted)."""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import click

from cli.output import ProgressBars, json_line
from retrieval.algorithms.dedup import KINDS, ImageThresholds
from retrieval.query.dedup import KEEP, RULES, TABLES, DedupOptions, find_duplicates


@click.command()
@click.argument("index_path", metavar="INDEX")
@click.option("--table", type=click.Choice(TABLES), default="images", show_default=True)
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Nearest neighbours each row is compared with.")
@click.option("--min-score", type=click.FloatRange(-1, 1), default=0.5, show_default=True,
              help="CLIP cosine from which a pair is verified (the second signal decides).")
@click.option("--rule", type=click.Choice(RULES), default="linked", show_default=True,
              help="linked: groups merge when most pairs checked between them are verified; components: any "
                   "verified pair links; clique: every two members must be a verified pair.")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl", "csv"]), default="table", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Same as --format jsonl.")
@click.option("--keep", type=click.Choice(KEEP), default=None,
              help="Which member of each group to keep; the others go to --remove-list.")
@click.option("--remove-list", type=click.Path(dir_okay=False), default=None,
              help="Write the paths of the files that --keep would not keep, one a line (never deletes).")
@click.option("--kinds", default="exact,near,contained,similar", show_default=True,
              help="Kinds of groups to report (and to list for removal).")
@click.option("--near-bits", type=click.IntRange(0, 64), default=ImageThresholds.near_bits, show_default=True,
              help="Images: the largest aligned perceptual-hash distance of the same picture.")
@click.option("--hashes/--no-hashes", default=True, show_default=True,
              help="Images: also take candidate pairs from perceptual hashes (turned, recoloured and framed copies "
                   "the model's neighbours miss); decodes every image once, then only new ones.")
@click.option("--fresh", is_flag=True, help="Forget what earlier runs saved and compare everything again.")
def dedup(index_path, table, k, min_score, rule, fmt, as_json, keep, remove_list, kinds, near_bits, hashes, fresh):
    """Find near-duplicate images, videos, video frames or texts in an index (read-only).

    Candidates come from the index's vectors (and, for images, perceptual hashes); every pair is then verified with
    a second signal (images: content hash, pixels and aligned perceptual hashes; videos: frame sequences in time;
    frames: the same moment of two videos, matched in time; texts: word overlap). Re-runs compare only rows added since.
    Kinds: exact, near (same picture transformed), similar (another shot),
    contained (a clip cut from a longer video)."""
    wanted = {s.strip() for s in kinds.split(",") if s.strip()}
    if not wanted <= set(KINDS):
        raise click.BadParameter(f"unknown kind in {kinds!r}; kinds: {', '.join(KINDS)}",
                                 param_hint="--kinds")
    if remove_list and not keep:
        keep = "largest"
    options = DedupOptions(table=table, k=k, min_score=min_score, rule=rule, keep=keep, fresh=fresh, hashes=hashes,
                           thresholds=ImageThresholds(near_bits=near_bits,
                                                      similar_bits=max(near_bits, ImageThresholds.similar_bits)))
    with ProgressBars("rows") as bars:
        result = find_duplicates(index_path, options, on_progress=bars)
    result.groups = [g for g in result.groups if g["kind"] in wanted]
    fmt = "jsonl" if as_json else fmt
    if fmt == "jsonl":
        for g in result.groups:
            click.echo(json_line(g))
    elif fmt == "csv":
        _csv(result.groups)
    else:
        _table(result.groups)
    if remove_list:
        paths = result.remove_list()
        Path(remove_list).write_text("".join(f"{p}\n" for p in paths))
        click.echo(f"wrote {len(paths)} paths to remove (keeping the {keep} of each group) to {remove_list}; "
                   "nothing was deleted", err=True)
    s = result.summary
    kinds_line = ", ".join(f"{name} {v['groups']} ({v['members']} files)" for name, v in s["kinds"].items()) or "none"
    click.echo(f"{s['rows']} rows ({s['searched']} searched now), {s['candidates']} candidate pairs, "
               f"{s['duplicate_pairs']} verified duplicates, {s['rejected_pairs']} rejected; groups: {kinds_line}; "
               f"{s['seconds']:.1f}s", err=True)
    if s["unverified"]:
        click.echo(f"{s['unverified']} pairs could not be verified (files unreadable); run again to retry", err=True)


def _name(m: dict) -> str:
    name = str(m.get("path") or m.get("source") or (m.get("text") or "")[:60] or m["id"])
    return f"{name} @ {m['t']:.1f}s" if m.get("t") is not None else name   # a frame: its video at its time


def _table(groups: list[dict]) -> None:
    if not groups:
        click.echo("no duplicates")
        return
    for g in groups:
        click.echo(f"group {g['group']}  {g['kind']}  {g['size']} members")
        best = {}
        for p in g["pairs"]:
            for a, b in ((p["a"], p["b"]), (p["b"], p["a"])):
                if a not in best or p["clip"] > best[a][1]:
                    best[a] = (b, p["clip"], p["kind"], p.get("contained"))
        for m in g["members"]:
            mark = "keep " if g.get("keep") == m["id"] else ("     " if g.get("keep") is None else "drop ")
            other = best.get(m["id"])
            extra = f"  {other[2]} of {other[0]} (clip {other[1]:.3f})" if other else ""
            if other and other[3] and other[3]["clip"] == m["id"]:
                extra += f" at {other[3]['start']:.1f}-{other[3]['end']:.1f}s of {other[3]['in']}"
            click.echo(f"  {mark}{m['id']:>8}  {_name(m)}{extra}")


def _csv(groups: list[dict]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(["group", "kind", "id", "path", "keep", "width", "height", "bytes", "mtime"])
    for g in groups:
        for m in g["members"]:
            keep = "" if g.get("keep") is None else str(g["keep"] == m["id"]).lower()
            writer.writerow([g["group"], g["kind"], m["id"], _name(m), keep, m.get("width"), m.get("height"),
                             m.get("bytes"), m.get("mtime")])
