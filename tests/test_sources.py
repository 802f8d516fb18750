"""Every indexer resolves its sources the same way (``retrieval.io.sources.resolve_sources``): the same one-line
errors for no source and a missing one, folders walked or listed, files of another kind refused by name."""
from __future__ import annotations

import pytest

from indexers.text_sources import discover_texts
from retrieval.errors import InvalidInput
from retrieval.io.shards import discover_shards
from retrieval.io.sources import discover, resolve_sources

DISCOVERERS = [discover, discover_shards, discover_texts]


@pytest.mark.parametrize("find", DISCOVERERS)
def test_no_source_and_a_missing_one_are_the_same_error_for_every_indexer(tmp_path, find):
    with pytest.raises(InvalidInput, match="^no source given$"):
        find([])
    with pytest.raises(InvalidInput, match=f"^source not found: {tmp_path / 'nope'}$"):
        find([str(tmp_path / "nope")])


def test_a_folder_is_walked_or_listed_and_a_file_of_another_kind_is_refused(tmp_path):
    (tmp_path / "sub" / ".hidden").mkdir(parents=True)
    for name in ("a.tar", "sub/b.tar", "sub/.hidden/c.tar", "sub/skip.tar", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    walked = next(resolve_sources([tmp_path], (".tar",), "{src}", exclude=["skip*"]))
    assert walked.files == [str(tmp_path / "a.tar"), str(tmp_path / "sub" / "b.tar")]
    listed = next(resolve_sources([tmp_path], (".TAR",), "{src}", recursive=False))
    assert listed.files == [str(tmp_path / "a.tar")]
    with pytest.raises(InvalidInput, match="notes.txt is no shard"):
        list(resolve_sources([tmp_path / "notes.txt"], (".tar",), "{src} is no shard"))
