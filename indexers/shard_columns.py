"""Which json keys of shard samples become columns of the ``images`` table: one rule for both engines.

A key becomes a column unless it is a built-in column's name (in any case: ``Width`` beside the image's ``width``
would only mislead) or the table already has ``MAX_META_COLUMNS`` metadata columns; the first sample to bring a
new key adds it, so when that cap is reached, which keys got in depends on the order samples arrive (the local
engine's: shard by shard; the Ray engine's: the order its decoding tasks ask).
"""
from __future__ import annotations

from typing import Iterable

MAX_META_COLUMNS = 256  # metadata columns a table may gain from shards (a json with ever-new keys stops there)


class MetaColumns:
    """The table's metadata columns and the rule for new ones."""

    def __init__(self, table_columns: Iterable[str], builtin: Iterable[str]):
        self.builtin = {n.lower() for n in builtin}
        self.columns = set(table_columns)  # the table's columns and those accepted this run
        self.n_meta = sum(1 for n in self.columns if n.lower() not in self.builtin)

    def split(self, meta: dict) -> tuple[dict, list[tuple[str, str]]]:
        """A sample's metadata -> (the columns it writes, [(key, why not)]), accepting new columns as it goes."""
        kept, dropped = {}, []
        for name, value in meta.items():
            if name.lower() in self.builtin:
                dropped.append((name, "a built-in column"))
            elif name in self.columns:
                kept[name] = value
            elif self.n_meta >= MAX_META_COLUMNS:
                dropped.append((name, f"the table has {MAX_META_COLUMNS} metadata columns already"))
            else:
                self.columns.add(name)
                self.n_meta += 1
                kept[name] = value
        return kept, dropped
