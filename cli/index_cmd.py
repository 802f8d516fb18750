"""``clipdex index images SRC... --index DIR``: build or update an index from image files, manifests or shards
(webdataset ``.tar`` files, brace patterns, img2dataset output folders), locally or on Ray (``--engine ray``)."""
from __future__ import annotations

import click

from cli.indexing import engine_options, indexing_options, run_indexer
from indexers.image_sources import discover_image_sources, index_image_sources
from indexers.images import ImageIndexOptions
from indexers.ocr import OcrOptions, ocr_engine, ocr_images
from retrieval.errors import InvalidInput
from retrieval.index.opening import open_for_writing
from retrieval.io.shards import is_shard_source


def summary_line(s: dict) -> str:
    parts = [f"added {s['added']}", f"updated {s['updated']}", f"reused {s['reused']}",
             f"unchanged {s['unchanged']}", f"removed {s['removed']}",
             f"errors {s['errors']}" + (f" (+{s['known_errors']} known)" if s["known_errors"] else "")]
    line = ", ".join(parts) + f" in {s['elapsed']:.1f}s ({s['images_per_s']:.1f} images/s)"
    if "shards" in s:
        line += (f"; shards: {s['shards']} read, {s['shards_unchanged']} unchanged"
                 + (f", {s['bad_shards']} broken" if s["bad_shards"] else "")
                 + (f", {s['metadata_dropped']} samples with json keys left out (see errors)"
                    if s.get("metadata_dropped") else ""))
    if s.get("long_captions"):
        line += f"; {s['long_captions']} captions longer than the context were chunk-pooled"
    if "ocr" in s:
        o = s["ocr"]
        line += (f"; OCR: read {o['read']} ({o['with_text']} with text, {o['lines']} lines), unchanged "
                 f"{o['unchanged']}, errors {o['errors']}" + (f" (+{o['known_errors']} known)" if o["known_errors"]
                                                              else "")
                 + f" in {o['elapsed']:.1f}s ({o['images_per_s']:.1f} images/s)")
    return line


@click.command("images")
@indexing_options(workers=True)
@click.option("--commit-every", default=2048, show_default=True, type=click.IntRange(1),
              help="Rows per commit: a crash loses at most this many.")
@engine_options
@click.option("--ocr", is_flag=True, help="Also read the text in each picture (offline OCR, pip install "
              "'clipdex[ocr]'), for keyword and hybrid search; pictures read before are skipped.")
@click.option("--dedup-codes/--no-dedup-codes", default=True, show_default=True,
              help="Keep each picture's perceptual-hash codes for `clipdex dedup`, taken as it is decoded (with the "
              "dedup extra installed; otherwise dedup decodes the files again).")
def images(sources, index_path, model, backend, batch_size, workers, exclude, prune, retry_errors, device, as_json,
           commit_every, engine, ray_address, actors, gpus_per_actor, ocr, dedup_codes):
    """Index image folders, manifests (CSV/Parquet/JSONL with path, caption, label columns) or webdataset shards
    (.tar files, brace patterns such as shards/{00000..00099}.tar, img2dataset output folders)."""
    if engine == "ray" and not any(is_shard_source(s) for s in sources):
        raise InvalidInput("--engine ray reads webdataset shards; give .tar files, brace patterns or shard folders")
    if ocr and any(is_shard_source(s) for s in sources):
        raise InvalidInput("--ocr reads image files; webdataset shards are not read by OCR yet")
    found = discover_image_sources(sources, exclude, prune)  # bad sources fail before the index is touched
    opts = ImageIndexOptions(batch_size=batch_size, workers=workers, prune=prune, retry_errors=retry_errors,
                             commit_rows=commit_every, probe_codes=dedup_codes)
    if engine == "ray":
        from indexers.ray_engine import RayOptions, check_ray, index_shards_ray  # deferred: Ray is an optional extra

        check_ray()
        if backend == "faiss":
            raise InvalidInput("--engine ray writes Lance tables; use --backend lance (the default)")
        ix = open_for_writing(index_path, model, backend, device=device)
        ray_opts = RayOptions(address=ray_address, actors=actors, gpus_per_actor=gpus_per_actor)
        run_indexer(ix, "shard", lambda progress: index_shards_ray(ix, found, opts, ray_opts, progress).as_dict(),
                    as_json, summary_line)
        return
    if ocr:
        ocr_engine()  # a missing extra fails before the index is touched
    ix = open_for_writing(index_path, model, backend, device=device)

    def run(progress) -> dict:
        summary = index_image_sources(ix, found, opts, progress).as_dict()
        if ocr:
            summary["ocr"] = ocr_images(ix, OcrOptions(retry_errors=retry_errors), progress).as_dict()
        return summary

    run_indexer(ix, "img", run, as_json, summary_line)
