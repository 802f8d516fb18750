import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from retrieval.errors import UnknownModel, WeightsUnavailable
from retrieval.models import factory
from retrieval.models.factory import DEFAULT_MODEL, ModelSpec, create_model, parse_model_spec
from retrieval.models.specs import TINY_WEIGHTS


def test_default_spec_is_vit_b32_laion():
    spec = parse_model_spec(None)
    assert (spec.kind, spec.arch, spec.source) == ("pretrained", "ViT-B-32", "laion2b_s34b_b79k")
    assert str(spec) == DEFAULT_MODEL


def test_spec_forms_parse(tmp_path):
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"x")
    assert parse_model_spec("clipdex-tiny") == ModelSpec("registered", arch="clipdex-tiny")
    assert parse_model_spec("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K").kind == "hf-hub"
    spec = parse_model_spec(f"ViT-B-32:{ckpt}")
    assert spec.kind == "checkpoint" and spec.source == str(ckpt.resolve())
    (tmp_path / "open_clip_config.json").write_text("{}")
    assert parse_model_spec(str(tmp_path)).kind == "local-dir"
    assert parse_model_spec("local-dir:" + str(tmp_path)).kind == "local-dir"


@pytest.mark.parametrize("bad, hint", [
    ("ViT-B-32:laion2b", "did you mean ViT-B-32:laion2b_"),
    ("vit-b-32:openai", "did you mean ViT-B-32:openai"),
    ("ViT-B-32", "needs weights"),
    ("nonsense", "unknown model"),
    ("ViT-B-32:/no/such/file.pt", "checkpoint file not found"),
    ("hf-hub:", "bad hub spec"),
])
def test_unknown_specs_say_the_right_spelling(bad, hint):
    with pytest.raises(UnknownModel, match=hint.replace("(", r"\(")):
        parse_model_spec(bad)


def test_default_weights_unavailable_offline_fails_fast_with_a_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsUnavailable) as err:
        create_model(parse_model_spec(DEFAULT_MODEL))
    msg = str(err.value)
    assert "\n" not in msg and "HF_HOME" in msg and "local checkpoint" in msg


def test_tiny_weights_are_deterministic_and_independent_of_global_rng():
    torch.manual_seed(123)
    a, _, _ = create_model(parse_model_spec("clipdex-tiny"))
    torch.manual_seed(456)
    b, _, _ = create_model(parse_model_spec("clipdex-tiny"))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    after = torch.rand(1)
    torch.manual_seed(456)
    assert torch.equal(after, torch.rand(1))  # building the tiny model left the caller's RNG alone


def test_local_checkpoint_file_loads_with_weights_only(tmp_path, tiny):
    path = tmp_path / "tiny.pt"
    torch.save(tiny.model.state_dict(), path)
    model, _, tok = create_model(parse_model_spec(f"clipdex-tiny:{path}"))
    with torch.no_grad():
        a = model.encode_text(tok(["a red circle"]))
        b = tiny.model.encode_text(tok(["a red circle"]))
    assert torch.allclose(a, b)


def test_local_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": object()}, path)  # not loadable with weights_only
    with pytest.raises(UnknownModel, match="cannot load checkpoint"):
        create_model(parse_model_spec(f"clipdex-tiny:{path}"))


def _broken_safetensors(kind: str) -> bytes:
    """The shipped weights, damaged: cut short, a header length past the file, a tensor's offsets past its data,
    or no header at all."""
    import struct

    data = TINY_WEIGHTS.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    if kind == "truncated":
        return data[:100_000]
    if kind == "header_too_long":
        return struct.pack("<Q", 10**12) + data[8:]
    if kind == "lying_offsets":
        header = json.loads(data[8:8 + n])
        name = next(k for k in header if k != "__metadata__")
        header[name]["data_offsets"][1] += 10**9
        raw = json.dumps(header).encode()
        return struct.pack("<Q", len(raw)) + raw + data[8 + n:]
    return b"\0" * 50


@pytest.mark.parametrize("kind", ["truncated", "header_too_long", "lying_offsets", "garbage"])
def test_a_damaged_safetensors_checkpoint_is_one_line(tmp_path, kind):
    path = tmp_path / f"{kind}.safetensors"
    path.write_bytes(_broken_safetensors(kind))
    with pytest.raises(UnknownModel, match="cannot load checkpoint") as err:
        create_model(parse_model_spec(f"clipdex-tiny:{path}"))
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_local_model_folder_loads(tmp_path, tiny):
    import open_clip

    cfg = open_clip.get_model_config("clipdex-tiny")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    torch.save(tiny.model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    model, _, tok = create_model(parse_model_spec(str(tmp_path)))
    with torch.no_grad():
        np.testing.assert_allclose(model.encode_text(tok(["x"])).numpy(), tiny.model.encode_text(tok(["x"])).numpy(),
                                   atol=1e-6)


def test_random_arch_specs_build_any_architecture_deterministically():
    spec = parse_model_spec("random:clipdex-tiny")
    assert (spec.kind, str(spec)) == ("random", "random:clipdex-tiny")
    a, _, _ = create_model(spec)
    b, _, _ = create_model(parse_model_spec("random:clipdex-tiny"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    shipped, _, _ = create_model(parse_model_spec("clipdex-tiny"))
    assert not torch.equal(a.state_dict()["text_projection"], shipped.state_dict()["text_projection"])
    with pytest.raises(UnknownModel, match="unknown architecture"):
        parse_model_spec("random:ViT-Q-99")


def test_clipdex_tiny_is_its_config_with_the_shipped_weights():
    shipped = load_file(str(TINY_WEIGHTS))
    model, _, _ = create_model(parse_model_spec("clipdex-tiny"))
    state = model.state_dict()
    assert set(shipped) == set(state)
    assert all(torch.equal(shipped[k].float(), state[k]) for k in state)
    assert TINY_WEIGHTS.stat().st_size <= 8 * 2**20


def test_missing_shipped_weights_are_one_line_saying_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setattr(factory, "TINY_WEIGHTS", tmp_path / "gone.safetensors")
    with pytest.raises(WeightsUnavailable, match="train_tiny.py") as err:
        create_model(parse_model_spec("clipdex-tiny"))
    assert "\n" not in str(err.value)
