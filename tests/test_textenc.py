"""Encoding texts of any length (retrieval.encode.text) and Long-CLIP model specs (retrieval.models.longclip) on
clipdex-tiny.

The stretch itself (hand-computed table, rows 0-19 unchanged, 77 -> 248, a stretched tiny model keeping short texts
at cosine > 0.99 and encoding 200 tokens) is tested in tests/test_longtext_math.py; here: what the encoder does
with it, and that nothing is truncated without being counted.
"""
import logging

import numpy as np
import pytest

from retrieval.algorithms.longtext import chunk_token_windows, longclip_effective_pos_embed, pool_chunks_grouped
from retrieval.encode.encoder import load_encoder
from retrieval.encode.text import encode_long_texts, long_text_counts, query_strategy
from retrieval.errors import InvalidInput, UnknownModel, WeightsUnavailable
from retrieval.models.factory import parse_model_spec

WORDS = ["dog", "cat", "tree", "house", "river", "car", "bird"]


def words(n: int, shift: int = 0) -> str:
    return " ".join(WORDS[(i + shift) % 7] for i in range(n))


@pytest.fixture(scope="module")
def enc():
    return load_encoder("clipdex-tiny", device="cpu")


def _tokens(enc, ids, ctx):
    tok = enc.tokenizer
    out = np.zeros((len(ids), ctx), np.int64)
    for r, t in enumerate(ids):
        row = [tok.sot_token_id, *t, tok.eot_token_id]
        out[r, :len(row)] = row
    return out


def test_chunk_strategy_pools_the_encoded_windows_of_a_long_text(enc):
    text = words(200)
    res = encode_long_texts(enc, ["a dog", text], "chunk", overlap=16)
    ids = enc.token_ids([text])[0]
    spans = chunk_token_windows(len(ids), 75, 16)
    assert res.n_tokens.tolist() == [2, 200] and res.n_chunks.tolist() == [1, len(spans)] and res.truncated == 0
    windows = enc.encode_token_batch(_tokens(enc, [ids[s:e] for s, e in spans], 77))
    expected = pool_chunks_grouped(windows, np.zeros(len(spans), np.int64), 1)[0]
    np.testing.assert_allclose(res.vectors[1], expected, atol=1e-5)
    np.testing.assert_allclose(res.vectors[0], enc.encode_texts(["a dog"])[0], atol=1e-5)  # short: as is
    assert "200 tokens" in res.describe(1) and "pooled" in res.describe(1)


def test_longclip_strategy_keeps_short_texts_and_encodes_long_ones_in_one_window(enc):
    long = words(200)
    res = encode_long_texts(enc, ["a photo of a dog", long], "longclip")
    short_ref = enc.encode_texts(["a photo of a dog"])[0]
    assert float(res.vectors[0] @ short_ref) > 0.99
    assert res.n_chunks.tolist() == [1, 1] and res.window == 246
    assert np.isfinite(res.vectors).all() and np.allclose(np.linalg.norm(res.vectors, axis=1), 1, atol=1e-5)
    # the stretched tower sees tokens past 75: the tail changes the vector, unlike truncation
    trunc = encode_long_texts(enc, [long, words(75) + " " + words(125, 3)], "truncate").vectors
    np.testing.assert_allclose(trunc[0], trunc[1], atol=1e-6)
    other = encode_long_texts(enc, [words(75) + " " + words(125, 3)], "longclip").vectors[0]
    assert float(other @ res.vectors[1]) < 0.9999
    assert enc.model.context_length == 77  # the encoder's own model is not stretched


def test_truncate_strategy_counts_and_warns_naming_the_strategy(enc, caplog):
    with caplog.at_level(logging.WARNING, logger="retrieval.encode.text"):
        res = encode_long_texts(enc, [words(10), words(120), words(300)], "truncate")
    assert res.truncated == 2 and res.n_chunks.tolist() == [1, 1, 1] and res.n_tokens.tolist() == [10, 120, 300]
    assert any("truncate" in r.getMessage() and "2 of 3" in r.getMessage() for r in caplog.records)
    first75 = enc.encode_token_batch(_tokens(enc, [enc.token_ids([words(120)])[0][:75]], 77))[0]
    np.testing.assert_allclose(res.vectors[1], first75, atol=1e-5)
    assert "TRUNCATED" in res.describe(2)


def test_bad_strategy_and_bad_texts_are_one_line_errors(enc):
    msg = "unknown long-text strategy 'stretch'; choose one of chunk, longclip, truncate"
    with pytest.raises(InvalidInput, match=msg):
        encode_long_texts(enc, ["a"], "stretch")
    with pytest.raises(InvalidInput, match="not a single string"):
        encode_long_texts(enc, "a dog")
    with pytest.raises(InvalidInput, match="strings only"):
        encode_long_texts(enc, ["a", None])


def test_encoder_method_is_the_function(enc):
    texts = ["a dog", words(150)]
    a = enc.encode_long_texts(texts, "chunk")
    b = encode_long_texts(enc, texts, "chunk")
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert a.n_chunks.tolist() == b.n_chunks.tolist()


def test_long_text_counts_by_hand():
    n_tokens, n_chunks = [10, 80, 200, 300], [1, 2, 1, 4]
    assert long_text_counts(n_tokens, n_chunks, "chunk") == {"long": 3, "chunked": 2, "stretched": 1, "truncated": 0}
    assert long_text_counts(n_tokens, [1, 1, 1, 1], "truncate", 75) == {"long": 3, "chunked": 0, "stretched": 0,
                                                                        "truncated": 3}


def test_query_strategy_defaults_to_the_tables_and_warns_on_a_mismatch(caplog):
    manifest = {"tables": {"texts": {"rows": 3, "long_text": "longclip"}, "images": {"rows": 1}}}
    assert query_strategy(manifest, "texts", None) == "longclip"
    assert query_strategy(manifest, "images", None) == "chunk"
    with caplog.at_level(logging.WARNING, logger="retrieval.encode.text"):
        assert query_strategy(manifest, "texts", "truncate") == "truncate"
    assert any("indexed with --long-text longclip" in r.getMessage() for r in caplog.records)
    with pytest.raises(InvalidInput):
        query_strategy(manifest, "texts", "bogus")


# ---- Long-CLIP checkpoints -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake_longclip(enc, tmp_path_factory):
    """A Long-CLIP checkpoint in the OpenAI layout (two 248-row tables) made from the tiny model's weights."""
    import torch

    sd = {k: v.clone() for k, v in enc.model.state_dict().items()}
    g = torch.Generator().manual_seed(3)
    base = torch.cat([enc.model.positional_embedding.detach(), torch.randn(171, 64, generator=g) * 0.01])
    sd["positional_embedding"] = base
    sd["positional_embedding_res"] = torch.randn(248, 64, generator=g) * 0.01
    path = tmp_path_factory.mktemp("ckpt") / "longclip-tiny.pt"
    torch.save(sd, path)
    return path, sd


def test_longclip_spec_loads_a_checkpoint_with_its_248_token_context(enc, fake_longclip):
    path, sd = fake_longclip
    spec = parse_model_spec(f"longclip:clipdex-tiny:{path}")
    assert spec.kind == "longclip" and str(spec) == f"longclip:clipdex-tiny:{path}"
    assert parse_model_spec(str(spec)) == spec
    lc = load_encoder(str(spec), device="cpu")
    assert lc.context_length == 248 and lc.dim == 64
    expected = longclip_effective_pos_embed(sd["positional_embedding"], sd["positional_embedding_res"])
    np.testing.assert_array_equal(lc.model.positional_embedding.detach().numpy(), expected)
    long = words(300)
    res = encode_long_texts(lc, [long], "longclip")  # already long: used as it is, not stretched again
    assert res.window == 246 and res.n_chunks.tolist() == [2] and lc.model.context_length == 248
    assert encode_long_texts(lc, [words(200)], "chunk").n_chunks.tolist() == [1]
    np.testing.assert_allclose(lc.encode_texts(["a dog"])[0], encode_long_texts(lc, ["a dog"], "longclip").vectors[0],
                               atol=1e-5)


def test_released_longclip_spec_fails_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = parse_model_spec("longclip:LongCLIP-B")
    assert (spec.arch, str(spec)) == ("ViT-B-16-quickgelu", "longclip:LongCLIP-B")
    from retrieval.models.factory import create_model

    msg = r"BeichenZhang/LongCLIP-B/longclip-B\.pt .*offline.*longclip:ViT-B-16-quickgelu:/path"
    with pytest.raises(WeightsUnavailable, match=msg):
        create_model(spec)


def test_bad_longclip_specs_are_refused(tmp_path):
    with pytest.raises(UnknownModel, match="bad Long-CLIP spec"):
        parse_model_spec("longclip:LongCLIP-X")
    with pytest.raises(UnknownModel, match="not found"):
        parse_model_spec(f"longclip:clipdex-tiny:{tmp_path / 'missing.pt'}")
    with pytest.raises(UnknownModel, match="unknown architecture"):
        parse_model_spec(f"longclip:ViT-Q-99:{tmp_path}")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    from retrieval.models.factory import create_model

    with pytest.raises(UnknownModel, match="cannot read Long-CLIP checkpoint"):
        create_model(parse_model_spec(f"longclip:clipdex-tiny:{junk}"))


def test_the_stretched_longclip_model_is_built_once_per_encoder(enc):
    first = encode_long_texts(enc, [words(100)], "longclip").vectors
    built = []
    stretched = enc.variant("longclip", lambda e: built.append(e))  # already there: not built again
    assert built == [] and stretched.context_length == 248 and stretched.model is not enc.model
    np.testing.assert_allclose(encode_long_texts(enc, [words(100)], "longclip").vectors, first, atol=1e-6)
