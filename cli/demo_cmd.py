"""``clipdex demo``: draw a small image set, index it, and search it, all in one command."""
from __future__ import annotations

import shutil
from pathlib import Path

import click

from cli.options import top_k_option
from cli.output import print_table
from clipdex.synthetic import make_shapes
from clipdex.synthetic.words import make_receipts
from indexers.images import ImageIndexOptions, index_images
from indexers.ocr import ocr_engine, ocr_images
from retrieval.encode.encoder import load_encoder
from retrieval.errors import InvalidInput, WeightsUnavailable
from retrieval.index.directory import create_index, open_index
from retrieval.io.sources import IMAGE_EXTENSIONS, discover
from retrieval.models.specs import DEFAULT_MODEL, TINY_MODEL
from retrieval.query.hybrid import HybridOptions, hybrid_search
from retrieval.query.search import search

QUERIES = ("a red circle", "a blue square", "a green triangle")

OFFLINE_NOTE = """\
note: the default model's weights ({model}) are not available here:
  {reason}
The demo goes on with {tiny}, a tiny model shipped with clipdex and trained only on drawn shapes: it knows
the shapes and colours of simple drawings like the ones the demo draws and nothing of the
real world, so use it to see the whole pipeline work (drawing, decoding, encoding, indexing, searching), not on
your photos. With the weights cached, `clipdex demo` uses the real model. `clipdex index` and `clipdex search`
never switch models on their own.
"""


@click.command()
@click.option("--out", default="clipdex-demo", show_default=True, help="Folder for the drawn images and the index.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Model to try first.")
@top_k_option(5, maximum=100)
@click.option("--receipts/--no-receipts", default=True, show_default=True,
              help="Also draw receipts, read them with OCR and find one by its total (needs the ocr extra).")
def demo(out: str, model: str, k: int, receipts: bool) -> None:
    """Draw shapes (images/<shape>/<colour>_<i>.png), index them with LanceDB, run a few searches; then find a
    receipt by its total (words read in the pictures, fused with the picture search)."""
    out_dir = Path(out)
    images_dir = out_dir / "images"
    if not images_dir.is_dir():
        make_shapes(images_dir, per_pair=2)
    try:
        encoder = load_encoder(model)
    except WeightsUnavailable as exc:
        click.echo(OFFLINE_NOTE.format(model=model, reason=exc, tiny=TINY_MODEL), err=True)
        encoder = load_encoder(TINY_MODEL)
    index_dir = out_dir / "shapes.clipdex"
    if index_dir.exists():
        ix = open_index(index_dir)
        stale = ix.model != str(encoder.spec)
        ix.close()
        if stale:  # the demo owns this folder: rebuild it for the model in use
            shutil.rmtree(index_dir)
    ix = create_index(index_dir, dim=encoder.dim, model=str(encoder.spec))
    found = discover([images_dir], IMAGE_EXTENSIONS)
    summary = index_images(ix, found, ImageIndexOptions(workers=0))
    click.echo(f"indexed {len(found.items)} drawn images into {index_dir} with {encoder.spec} "
               f"({summary.added} new, {summary.unchanged} unchanged)\n")
    for q in QUERIES:
        click.echo(f'clipdex search {index_dir} "{q}" -k {k}')
        print_table(search(ix, q, k=k, encoder=encoder).select(["rank", "score", "path"]))
        click.echo("")
    probe = found.items[0].path
    click.echo(f"clipdex search {index_dir} --image {probe} -k {k}")
    print_table(search(ix, image=probe, k=k, encoder=encoder).select(["rank", "score", "path"]))
    ix.close()
    if receipts:
        find_a_receipt(out_dir, encoder, k)


def find_a_receipt(out_dir: Path, encoder, k: int) -> None:
    """Receipts indexed with --ocr, then one found by its total, with why it matched."""
    try:
        ocr_engine()
    except InvalidInput as exc:
        click.echo(f"\n(to find a receipt by its total, install the OCR extra: {exc})", err=True)
        return
    drawn = make_receipts(out_dir / "receipts")
    index_dir = out_dir / "receipts.clipdex"
    if index_dir.exists():
        shutil.rmtree(index_dir)  # the demo owns this folder
    with create_index(index_dir, dim=encoder.dim, model=str(encoder.spec)) as ix:
        index_images(ix, discover([out_dir / "receipts"], IMAGE_EXTENSIONS), ImageIndexOptions(workers=0))
        read = ocr_images(ix)
        query = f"total {drawn[0]['total']}"
        click.echo(f"\nread the text in {read.read} receipts (clipdex index images ... --ocr)\n")
        click.echo(f'clipdex search {index_dir} "{query}" --explain -k {k}')
        hits = hybrid_search(ix, query, k=k, encoder=encoder, options=HybridOptions(mode="hybrid", explain=True))
        words = [", ".join(m) for m in hits.column("matched").to_pylist()]
        ocr = [t or "" for t in hits.column("ocr").to_pylist()]
        print_table(hits.select(["rank", "score", "path"]).append_column("matched", [words])
                    .append_column("read in the picture", [ocr]))
