import json

import numpy as np
import pytest

from clipdex.synthetic.embeddings import unit_vectors
from retrieval.errors import IndexExists, IndexFormatError, IndexLocked, IndexNotFound, InvalidInput, ModelMismatch
from retrieval.index.directory import FORMAT_VERSION, create_index, open_index


def test_manifest_records_model_dim_backend_and_tables(tmp_path):
    ix = create_index(tmp_path / "a", model="clipdex-tiny", backend="faiss")
    ix.add_vectors("images", unit_vectors(0, 3, 64), {"path": ["a", "b", "c"]})
    ix.close()
    m = json.loads((tmp_path / "a" / "clipdex.json").read_text())
    assert m["format"] == "clipdex" and m["format_version"] == FORMAT_VERSION
    assert (m["model"], m["dim"], m["metric"], m["backend"]) == ("clipdex-tiny", 64, "cosine", "faiss")
    assert m["tables"]["images"]["rows"] == 3 and m["tables"]["images"]["ann"]["kind"] == "flat"


def test_open_refuses_missing_and_newer_indexes(tmp_path):
    with pytest.raises(IndexNotFound, match="does not exist"):
        open_index(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(IndexNotFound, match="not a clipdex index"):
        open_index(tmp_path / "plain")
    create_index(tmp_path / "b", dim=8, model="none").close()
    path = tmp_path / "b" / "clipdex.json"
    m = json.loads(path.read_text())
    path.write_text(json.dumps({**m, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(IndexFormatError, match="newer"):
        open_index(tmp_path / "b")


def test_old_format_is_migrated_explicitly(tmp_path):
    create_index(tmp_path / "c", dim=8, model="none").close()
    path = tmp_path / "c" / "clipdex.json"
    m = json.loads(path.read_text())
    m.pop("format_version")
    m["tables"] = {"images": {"rows": 0}}
    path.write_text(json.dumps(m))
    open_index(tmp_path / "c", writable=True).close()
    m = json.loads(path.read_text())
    assert m["format_version"] == FORMAT_VERSION and m["tables"]["images"]["ann"]["kind"] == "flat"


def test_model_mismatch_is_refused(tmp_path):
    ix = create_index(tmp_path / "d", model="clipdex-tiny")
    with pytest.raises(ModelMismatch, match="built with clipdex-tiny"):
        ix.check_model("ViT-B-32:openai")
    ix.close()
    with pytest.raises(ModelMismatch):
        create_index(tmp_path / "d", dim=64, model="ViT-B-32:openai")
    raw = create_index(tmp_path / "e", dim=8, model="none")
    with pytest.raises(ModelMismatch, match="unknown model"):
        raw.encoder()


def test_one_writer_at_a_time(tmp_path):
    ix = create_index(tmp_path / "f", dim=8, model="none")
    with pytest.raises(IndexLocked, match="another process"):
        open_index(tmp_path / "f", writable=True)
    open_index(tmp_path / "f").close()  # readers are fine
    ix.close()
    open_index(tmp_path / "f", writable=True).close()


def test_create_refuses_a_non_index_folder(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "file.txt").write_text("mine")
    with pytest.raises(IndexExists, match="not a clipdex index"):
        create_index(tmp_path / "g", dim=8, model="none")
    assert (tmp_path / "g" / "file.txt").read_text() == "mine"


@pytest.mark.parametrize("bad", [np.full((2, 8), np.nan), np.zeros((2, 8)), np.ones((2, 7))])
def test_raw_vector_api_rejects_bad_vectors(tmp_path, bad):
    ix = create_index(tmp_path / "h", dim=8, model="none")
    with pytest.raises(InvalidInput):
        ix.add_vectors("images", bad)
    assert not ix.store.has_table("images") or ix.store.count("images") == 0


def test_raw_vector_api_normalises_and_keeps_metadata(tmp_path):
    ix = create_index(tmp_path / "i", dim=8, model="none", backend="lance")
    x = unit_vectors(0, 4, 8) * 3.0
    ids = ix.add_vectors("images", x, {"path": list("abcd"), "tag": ["x", "y", "x", "y"]})
    D, I = ix.search_vectors("images", x[2:3], 1)
    assert I[0, 0] == ids[2] and abs(D[0, 0] - 1.0) < 1e-5
    assert ix.store.take("images", [ids[3]], ["tag"]).column("tag").to_pylist() == ["y"]
    ids2 = ix.add_vectors("images", x[:1], {"path": ["e"]})
    assert ids2[0] == ids[-1] + 1  # ids are never reused
