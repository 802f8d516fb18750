"""Long-text math (docs/ALGORITHMS.md section 6): Long-CLIP stretch by hand and on a tiny model, chunk pooling."""

import copy
import json

import numpy as np
import pytest

from retrieval.algorithms.longtext import (
    apply_longclip_stretch,
    chunk_token_windows,
    load_longclip_checkpoint,
    longclip_effective_pos_embed,
    longclip_stretch_pos_embed,
    pool_chunk_embeddings,
    pool_chunks_grouped,
)

TINY = "clipdex-test-tiny-longtext"
TINY_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
LONG_TEXT = " ".join(["dog", "cat", "tree", "house", "river", "car", "bird"][i % 7] for i in range(200))


# ---- stretch, by hand -------------------------------------------------------------------------------------------
def test_stretch_of_a_small_table_matches_the_hand_computation():
    col = np.array([0.0, 10.0, 20.0, 40.0, 70.0, 110.0])
    pe = np.stack([col, -col], axis=1)  # L = 6, D = 2
    out = longclip_stretch_pos_embed(pe, keep=2, ratio=2)
    # kept: 0, 10 | interpolated pairs (20,40) (40,70) (70,110) | extrapolated past 110 by half the last step
    expected = np.array([0, 10, 20, 30, 40, 55, 70, 90, 110, 130], dtype=np.float32)
    assert out.shape == (2 * 6 - 1 * 2, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0], expected)
    np.testing.assert_allclose(out[:, 1], -expected)


def test_stretch_takes_clip_77_to_longclip_248_and_keeps_the_first_20_rows():
    rng = np.random.default_rng(0)
    pe = rng.normal(size=(77, 8)).astype(np.float32)
    out = longclip_stretch_pos_embed(pe)
    assert out.shape == (248, 8)
    np.testing.assert_array_equal(out[:20], pe[:20])
    np.testing.assert_allclose(out[20:244:4], pe[20:76], atol=1e-6)  # r = 0 rows are the original rows 20..75
    np.testing.assert_allclose(out[22], (pe[20] + pe[21]) / 2, atol=1e-6)
    np.testing.assert_allclose(out[23], 0.25 * pe[20] + 0.75 * pe[21], atol=1e-6)
    np.testing.assert_allclose(out[244], pe[76], atol=1e-6)
    np.testing.assert_allclose(out[247], pe[76] + 0.75 * (pe[76] - pe[75]), atol=1e-5)


def test_stretch_is_not_a_resampling_of_the_whole_table():
    pe = np.arange(77, dtype=np.float32)[:, None] ** 2
    out = longclip_stretch_pos_embed(pe)
    resampled = np.interp(np.linspace(0, 76, 248), np.arange(77), pe[:, 0])
    assert not np.allclose(out[:20, 0], resampled[:20])


def test_stretch_with_ratio_one_is_the_identity_and_accepts_torch():
    torch = pytest.importorskip("torch")
    pe = torch.randn(10, 3)
    np.testing.assert_allclose(longclip_stretch_pos_embed(pe, keep=4, ratio=1), pe.numpy(), atol=1e-6)


@pytest.mark.parametrize("kwargs", [{"keep": 77}, {"keep": -1}, {"ratio": 0}, {"ratio": 2.5}])
def test_stretch_validates_keep_and_ratio(kwargs):
    with pytest.raises(ValueError):
        longclip_stretch_pos_embed(np.zeros((77, 4)), **kwargs)


def test_effective_table_takes_the_first_rows_from_the_first_and_the_rest_from_res():
    a = np.zeros((248, 4))
    b = np.ones((248, 4))
    eff = longclip_effective_pos_embed(a, b)
    assert eff.shape == (248, 4) and eff.dtype == np.float32
    assert (eff[:20] == 0).all() and (eff[20:] == 1).all()
    with pytest.raises(ValueError):
        longclip_effective_pos_embed(a, b[:100])


# ---- chunk windows and pooling ----------------------------------------------------------------------------------
def test_chunk_windows_by_hand():
    assert chunk_token_windows(0, 75, 10) == [(0, 0)]
    assert chunk_token_windows(50, 75, 10) == [(0, 50)]
    assert chunk_token_windows(75, 75, 10) == [(0, 75)]
    assert chunk_token_windows(200, 75, 25) == [(0, 75), (50, 125), (100, 175), (125, 200)]
    assert chunk_token_windows(10, 4, 0) == [(0, 4), (4, 8), (6, 10)]


@pytest.mark.parametrize("n,window,overlap", [(1, 1, 0), (76, 75, 0), (500, 75, 20), (1000, 246, 100), (37, 5, 4)])
def test_chunk_windows_cover_every_token_with_the_overlap(n, window, overlap):
    wins = chunk_token_windows(n, window, overlap)
    covered = np.zeros(n, dtype=bool)
    for s, e in wins:
        assert 0 <= s < e <= n and e - s == min(window, n)
        covered[s:e] = True
    assert covered.all()
    assert all(e0 - s1 >= overlap for (_, e0), (s1, _) in zip(wins, wins[1:]))
    assert wins[0][0] == 0 and wins[-1][1] == n


@pytest.mark.parametrize("args", [(10, 0, 0), (10, 5, 5), (10, 5, -1), (-1, 5, 0), (10.5, 5, 1)])
def test_chunk_windows_validate_their_arguments(args):
    with pytest.raises(ValueError):
        chunk_token_windows(*args)


def test_pool_chunk_embeddings_by_hand():
    e = np.array([[2.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(pool_chunk_embeddings(e), [2**-0.5, 2**-0.5], atol=1e-7)
    np.testing.assert_allclose(pool_chunk_embeddings(e, [3, 1], weighted=True), np.array([3, 1]) / np.sqrt(10),
                               atol=1e-7)
    np.testing.assert_allclose(pool_chunk_embeddings(e, [3, 1]), [2**-0.5, 2**-0.5], atol=1e-7)  # unweighted
    with pytest.raises(ValueError, match="lengths"):
        pool_chunk_embeddings(e, weighted=True)


def test_pool_chunks_grouped_matches_pooling_each_group():
    rng = np.random.default_rng(4)
    e = rng.normal(size=(9, 6)).astype(np.float32)
    group = np.array([2, 0, 0, 1, 2, 2, 0, 1, 3])
    lengths = rng.integers(1, 75, size=9)
    for weighted in (False, True):
        out = pool_chunks_grouped(e, group, 4, lengths, weighted=weighted)
        assert out.shape == (4, 6) and out.dtype == np.float32
        for g in range(4):
            sel = group == g
            np.testing.assert_allclose(out[g], pool_chunk_embeddings(e[sel], lengths[sel], weighted), atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)


def test_pool_chunks_grouped_refuses_empty_groups_and_bad_ids():
    e = np.ones((3, 2))
    with pytest.raises(ValueError, match="empty groups: \\[1\\]"):
        pool_chunks_grouped(e, np.array([0, 0, 2]), 3)
    with pytest.raises(ValueError, match="group ids"):
        pool_chunks_grouped(e, np.array([0, 1, 5]), 3)


# ---- tiny open_clip model ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch = pytest.importorskip("torch")
    open_clip = pytest.importorskip("open_clip")
    cfg_dir = tmp_path_factory.mktemp("model_configs")
    (cfg_dir / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(cfg_dir)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY, pretrained=None).eval()
    return model, open_clip.get_tokenizer(TINY), torch


def _encode(model, tokenizer, torch, texts, n_ctx):
    with torch.no_grad():
        return model.encode_text(tokenizer(texts, context_length=n_ctx), normalize=True)


def test_stretched_tiny_model_keeps_short_texts_and_encodes_200_tokens(tiny):
    model, tokenizer, torch = tiny
    stretched = copy.deepcopy(model)
    n_ctx = apply_longclip_stretch(stretched)
    assert n_ctx == 248 and stretched.context_length == 248
    assert stretched.positional_embedding.shape == (248, 64)
    assert stretched.attn_mask.shape == (248, 248)
    assert torch.equal(stretched.attn_mask, torch.full((248, 248), float("-inf")).triu(1))
    assert torch.equal(stretched.positional_embedding[:20], model.positional_embedding[:20])
    assert model.context_length == 77  # the original is untouched

    short = ["a photo of a dog", "two cats on a sofa"]
    cos = (_encode(model, tokenizer, torch, short, 77) * _encode(stretched, tokenizer, torch, short, 248)).sum(-1)
    assert (cos > 0.99).all()

    assert len(tokenizer.encode(LONG_TEXT)) == 200
    long = _encode(stretched, tokenizer, torch, [LONG_TEXT], 248)
    assert long.shape == (1, 64) and torch.isfinite(long).all()
    assert long.norm(dim=-1).item() == pytest.approx(1.0, abs=1e-5)


def test_stretch_works_on_a_custom_text_tower(tiny):
    _, tokenizer, torch = tiny
    import open_clip

    torch.manual_seed(0)
    custom = open_clip.create_model(TINY, pretrained=None, force_custom_text=True).eval()
    reference = copy.deepcopy(custom)
    assert apply_longclip_stretch(custom) == 248
    assert custom.text.num_pos == custom.text.context_length == custom.context_length == 248
    assert custom.text.attn_mask.shape == (248, 248)
    short = _encode(reference, tokenizer, torch, ["a dog"], 77)
    stretched = _encode(custom, tokenizer, torch, ["a dog"], 248)
    cos = (short * stretched).sum(-1)
    assert cos.item() > 0.99
    assert torch.isfinite(_encode(custom, tokenizer, torch, [LONG_TEXT], 248)).all()


def _fake_longclip_checkpoint(model, torch):
    """A Long-CLIP-shaped checkpoint (OpenAI layout, two 248-row tables) made from a tiny model's weights."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    sd["positional_embedding"] = torch.randn(248, 64, generator=g) * 0.01
    sd["positional_embedding_res"] = torch.randn(248, 64, generator=g) * 0.01
    sd["context_length"] = torch.tensor(248)
    return sd


def test_load_longclip_checkpoint_installs_the_effective_table(tiny):
    model, tokenizer, torch = tiny
    sd = _fake_longclip_checkpoint(model, torch)
    target = copy.deepcopy(model)
    with torch.no_grad():
        target.token_embedding.weight.zero_()  # proves the other weights are loaded too
    assert load_longclip_checkpoint(target, {"state_dict": sd}) == 248
    expected = longclip_effective_pos_embed(sd["positional_embedding"], sd["positional_embedding_res"])
    np.testing.assert_array_equal(target.positional_embedding.detach().numpy(), expected)
    assert target.attn_mask.shape == (248, 248) and target.context_length == 248
    assert torch.equal(target.token_embedding.weight, model.token_embedding.weight)
    long = _encode(target, tokenizer, torch, [LONG_TEXT], 248)
    assert long.norm().item() == pytest.approx(1.0, abs=1e-5)


def test_load_longclip_checkpoint_maps_openai_keys_into_a_custom_text_tower(tiny):
    model, tokenizer, torch = tiny
    import open_clip

    sd = _fake_longclip_checkpoint(model, torch)
    clip_model = copy.deepcopy(model)
    load_longclip_checkpoint(clip_model, sd)
    custom = open_clip.create_model(TINY, pretrained=None, force_custom_text=True).eval()
    load_longclip_checkpoint(custom, sd)
    texts = ["a photo of a dog", LONG_TEXT]
    np.testing.assert_allclose(
        _encode(custom, tokenizer, torch, texts, 248).numpy(),
        _encode(clip_model, tokenizer, torch, texts, 248).numpy(),
        atol=1e-5,
    )


def test_load_longclip_checkpoint_refuses_a_mismatched_checkpoint_without_touching_the_model(tiny):
    model, _, torch = tiny
    target = copy.deepcopy(model)
    sd = _fake_longclip_checkpoint(model, torch)
    sd["visual.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match="unexpected"):
        load_longclip_checkpoint(target, sd)
    assert target.context_length == 77 and target.positional_embedding.shape == (77, 64)
    with pytest.raises(ValueError, match="Long-CLIP"):
        load_longclip_checkpoint(target, model.state_dict())
