"""RECO checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain values only. A checkpoint
that holds a pickled object (which could run code while loading) is refused with one line, and its code never
runs, whether it comes through ``clipdex classify --fuser``, the Python API or ``train-reco --resume``."""
import os

import pytest
import torch

from retrieval.algorithms.reco import RecoFuser, load_reco_checkpoint, save_reco_checkpoint
from retrieval.classify.pipeline import load_fusers
from retrieval.classify.train import train_reco_on_index
from retrieval.errors import InvalidInput


class _RunsCode:
    """Unpickling this calls os.mkdir(marker): the harmless stand-in for a checkpoint that runs code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture(scope="module")
def data(classify_corpus):
    return classify_corpus


def plain_checkpoint(dim: int = 8, heads: int = 2, model: str = "clipdex-tiny") -> dict:
    f = RecoFuser(dim, heads)
    return dict(version=1, dim=dim, heads=heads, epoch=1, history=[{"epoch": 1, "loss": 0.5}], model=model,
                image_fuser=f.state_dict(), text_fuser=RecoFuser(dim, heads).state_dict())


def evil_checkpoint(path, marker):
    state = plain_checkpoint()
    state["payload"] = _RunsCode(marker)
    torch.save(state, path)
    return path


def test_a_plain_checkpoint_round_trips_with_weights_only(tmp_path):
    save_reco_checkpoint(tmp_path / "ok.pt", plain_checkpoint())
    state = torch.load(tmp_path / "ok.pt", weights_only=True)
    assert state["dim"] == 8 and state["history"] == [{"epoch": 1, "loss": 0.5}]
    image, text = load_fusers(str(tmp_path / "ok.pt"), "clipdex-tiny")
    assert isinstance(image, RecoFuser) and not image.training and not text.training


def test_a_checkpoint_holding_a_pickled_object_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "code-ran"
    path = evil_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(InvalidInput) as err:
        load_reco_checkpoint(path)
    assert "pickled Python objects" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InvalidInput, match="pickled Python objects"):
        load_fusers(str(path), "clipdex-tiny")
    assert not marker.exists()


@pytest.mark.parametrize("content, message", [(b"not a checkpoint", "cannot read RECO checkpoint"),
                                              (None, "is not a RECO checkpoint")])
def test_other_bad_fuser_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if content is None:
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(InvalidInput, match=message) as err:
        load_fusers(str(path), "clipdex-tiny")
    assert "\n" not in str(err.value)


def test_classify_refuses_an_unsafe_fuser_with_one_line(runner, cli, data, tmp_path):
    marker = tmp_path / "code-ran"
    path = evil_checkpoint(tmp_path / "evil.pt", marker)
    r = runner.invoke(cli, ["classify", data["test"], "--classes", data["classes"], "--method", "reco",
                            "--support", data["support"], "--fuser", str(path)])
    assert r.exit_code == 1 and not marker.exists()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "pickled Python objects" in lines[0], r.stderr


def test_train_reco_refuses_to_resume_from_an_unsafe_checkpoint(data, tmp_path):
    marker = tmp_path / "code-ran"
    path = evil_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(InvalidInput, match="pickled Python objects"):
        train_reco_on_index(data["support"], path, epochs=1, k=4, batch_size=16, resume=True)
    assert not marker.exists()


def test_train_reco_writes_a_checkpoint_that_loads_with_weights_only(data, tmp_path):
    out = tmp_path / "fuser.pt"
    train_reco_on_index(data["support"], out, epochs=1, k=4, batch_size=16)
    state = torch.load(out, weights_only=True)
    assert state["model"] == "clipdex-tiny" and state["k"] == 4 and state["pairs"] == 48
