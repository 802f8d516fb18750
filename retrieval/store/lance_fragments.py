"""Lance's distributed write, for writers in other processes (Ray workers): write fragments, commit them elsewhere.

A worker writes its rows as data files of a Lance table (``write_fragments``: files under the table's ``data/``,
invisible to readers until committed) and hands back each fragment's metadata as a JSON string; the one writer of
the index (the driver) commits a group of them with one ``Append`` (one new table version), so a killed worker
leaves only unreferenced files and a killed driver loses only the group in flight. Schema changes (new metadata
columns) are schema-only commits (``add_columns``: no data rewritten), made before any fragment that uses them is
written: a fragment holds a subset of the table's columns, and the ones it lacks read as null.

pylance (``import lance``) is a heavy optional dependency of the ``[ray]`` extra, imported in each function.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa

from retrieval.errors import InvalidInput


def _lance():
    try:
        import lance  # heavy optional dependency: only the distributed write needs pylance
    except ImportError:
        raise InvalidInput("the distributed write needs pylance: pip install 'clipdex[ray]'") from None
    return lance


def table_uri(root: str | Path, table: str) -> str:
    """The Lance dataset of ``table`` in a LanceDB folder ``root`` (the index's ``lance/``)."""
    return str(Path(root) / f"{table}.lance")


def table_schema(root: str | Path, table: str) -> pa.Schema:
    """The table's schema as committed now (a fragment is written with it)."""
    return _lance().dataset(table_uri(root, table)).schema


def read_rows(root: str | Path, table: str, columns: Sequence[str], where: str | None = None) -> pa.Table:
    """Committed rows of ``table`` matching ``where`` (Lance SQL, already rendered), read-only."""
    return _lance().dataset(table_uri(root, table)).to_table(columns=list(columns), filter=where)


def write_rows(root: str | Path, table: str, rows: pa.Table, rows_per_file: int = 1 << 20) -> list[str]:
    """Write ``rows`` (the table's schema, or a subset of its columns) as uncommitted fragments; returns their
    metadata, one JSON string each, for :func:`commit_fragments`."""
    if not len(rows):
        return []
    lance = _lance()
    frags = lance.fragment.write_fragments(rows, table_uri(root, table), schema=rows.schema,
                                           max_rows_per_file=rows_per_file)
    return [json.dumps(f.to_json()) for f in frags]


def write_batches(root: str | Path, table: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch],
                  rows_per_file: int = 1 << 20) -> list[str]:
    """:func:`write_rows` for a stream of record batches in ``schema`` (one block in memory at a time)."""
    lance = _lance()
    reader = pa.RecordBatchReader.from_batches(schema, iter(batches))
    frags = lance.fragment.write_fragments(reader, table_uri(root, table), schema=schema,
                                           max_rows_per_file=rows_per_file)
    return [json.dumps(f.to_json()) for f in frags]


def fragment_rows(fragments: Sequence[str]) -> int:
    """Rows in fragments given as :func:`write_rows` returned them."""
    return sum(int(json.loads(f)["physical_rows"]) for f in fragments)


def commit_fragments(root: str | Path, table: str, fragments: Sequence[str]) -> int:
    """Append the fragments (JSON strings of :func:`write_rows`) to ``table`` in one commit; returns the new
    version (the current one when there is nothing to commit)."""
    lance = _lance()
    uri = table_uri(root, table)
    ds = lance.dataset(uri)
    if not fragments:
        return ds.version
    frags = [lance.fragment.FragmentMetadata.from_json(f) for f in fragments]
    return lance.LanceDataset.commit(uri, lance.LanceOperation.Append(frags), read_version=ds.version).version


def add_null_columns(root: str | Path, table: str, fields: Sequence[pa.Field], attempts: int = 10) -> None:
    """Add all-null columns to ``table`` (a schema-only commit), retried while another commit races it."""
    lance = _lance()
    for attempt in range(attempts):
        ds = lance.dataset(table_uri(root, table))
        new = [f for f in fields if f.name not in ds.schema.names]
        if not new:
            return
        try:
            ds.add_columns(new)
            return
        except OSError:  # a concurrent commit (the driver appending): read the new version and try again
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def fragment_counts(root: str | Path, table: str) -> list[tuple[int, int]]:
    """[(fragment id, live rows)] of ``table`` as committed now (deleted rows not counted), in scan order."""
    ds = _lance().dataset(table_uri(root, table))
    return [(f.fragment_id, f.count_rows()) for f in ds.get_fragments()]


def read_fragment(root: str | Path, table: str, fragment: int, columns: Sequence[str], offset: int = 0,
                  limit: int | None = None) -> pa.Table:
    """Live rows ``offset`` to ``offset + limit`` of one fragment of ``table`` (deleted rows skipped), in order."""
    frag = _lance().dataset(table_uri(root, table)).get_fragment(fragment)
    return frag.to_table(columns=list(columns), offset=offset, limit=limit)
