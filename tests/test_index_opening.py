"""``retrieval.index.opening.open_for_writing``: the one way writers open or create an index. A new index gets the
model's spec and dimension; an existing one is checked against the model, backend and vector size asked for, and
a mismatch is refused before anything is written (``index embeddings`` included: issue 14 #7)."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from retrieval.errors import IndexExists, InvalidInput, ModelMismatch
from retrieval.index.directory import MANIFEST, create_index
from retrieval.index.opening import open_for_writing


def files(path):
    return {str(p.relative_to(path)): p.stat().st_mtime_ns
            for p in path.rglob("*") if p.is_file() and p.name != ".lock"}


def test_a_missing_index_is_created_with_the_models_spec_and_dimension(tmp_path, tiny):
    with open_for_writing(tmp_path / "new", "clipdex-tiny") as ix:
        assert (ix.model, ix.dim, ix.backend) == ("clipdex-tiny", tiny.dim, "lance")
    with open_for_writing(tmp_path / "raw", "none", "faiss", dim=12) as ix:
        assert (ix.model, ix.dim, ix.backend) == ("none", 12, "faiss")


def test_an_existing_index_keeps_its_model_when_none_is_asked_for(tmp_path):
    create_index(tmp_path / "ix", model="clipdex-tiny").close()
    with open_for_writing(tmp_path / "ix") as ix:
        assert ix.writable and ix.model == "clipdex-tiny"


@pytest.mark.parametrize("built, asked, backend, error, message", [
    ("clipdex-tiny", "none", None, ModelMismatch, "built with clipdex-tiny, not vectors of an unknown model"),
    ("none", "clipdex-tiny", None, ModelMismatch,
     "built with vectors of an unknown model (--model none), not clipdex-tiny"),
    ("clipdex-tiny", "random:clipdex-tiny", None, ModelMismatch, "built with clipdex-tiny, not random:clipdex-tiny"),
    ("clipdex-tiny", None, "faiss", IndexExists, "uses the lance backend, not faiss"),
])
def test_a_mismatch_is_refused_and_the_index_is_left_alone(tmp_path, tiny, built, asked, backend, error, message):
    path = tmp_path / "ix"
    create_index(path, dim=tiny.dim, model=built).close()
    before = files(path)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_for_writing(path, asked, backend)
    assert files(path) == before
    with open_for_writing(path, built) as ix:  # the failed attempt released the index
        assert ix.model == built


def test_vectors_of_another_size_than_the_model_makes_are_refused_before_creating(tmp_path, tiny):
    with pytest.raises(InvalidInput, match=f"clipdex-tiny makes {tiny.dim}-d vectors; the vectors given are 3-d"):
        open_for_writing(tmp_path / "new", "clipdex-tiny", dim=3)
    assert not (tmp_path / "new").exists()


def test_index_embeddings_refuses_vectors_of_another_model(tmp_path, tiny, runner, cli):
    x = np.random.default_rng(0).standard_normal((20, tiny.dim)).astype(np.float32)
    src = tmp_path / "vecs.parquet"
    pq.write_table(pa.table({"vector": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), tiny.dim),
                             "path": [f"v{i}" for i in range(20)]}), src)
    model_ix, raw_ix = tmp_path / "model.clipdex", tmp_path / "raw.clipdex"
    create_index(model_ix, model="clipdex-tiny").close()
    create_index(raw_ix, dim=tiny.dim, model="none").close()
    for target, model in ((model_ix, "none"), (raw_ix, "clipdex-tiny")):
        before = files(target)
        r = runner.invoke(cli, ["index", "embeddings", str(src), "--index", str(target), "--model", model])
        assert r.exit_code == 1 and r.stderr.startswith("error: ") and "built with" in r.stderr, r.output
        assert len(r.stderr.strip().splitlines()) == 1 and files(target) == before
    r = runner.invoke(cli, ["index", "embeddings", str(src), "--index", str(model_ix), "--model", "clipdex-tiny",
                            "--json"])
    assert r.exit_code == 0, r.output
    assert '"added":20' in r.stdout and (model_ix / MANIFEST).is_file()
