import numpy as np
import pytest
import torch

from clipdex.synthetic.embeddings import unit_vectors
from retrieval.algorithms.reco import RecoFuser, info_nce, knn_ids, reco_loss, reco_mean_fuse, reco_refine, train_reco


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models: one thread avoids oversubscription on a shared machine (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_mean_fuse_formula_and_weight_zero_is_query():
    rng = np.random.default_rng(0)
    q, r = unit_vectors(rng, 3, 6), rng.standard_normal((3, 4, 6))
    np.testing.assert_allclose(reco_mean_fuse(q, r, 0.0), q, atol=1e-6)
    m = q + 0.7 * r.mean(1)
    np.testing.assert_allclose(reco_mean_fuse(q, r, 0.7), m / np.linalg.norm(m, axis=1, keepdims=True), atol=1e-6)


def test_knn_ids_matches_sorting_and_excludes_self():
    rng = np.random.default_rng(1)
    x = unit_vectors(rng, 30, 8)
    ids = knn_ids(x, x, 5, exclude_self=True)
    for i in range(30):
        s = x @ x[i]
        s[i] = -np.inf
        np.testing.assert_array_equal(ids[i], np.argsort(-s, kind="stable")[:5])
    np.testing.assert_array_equal(knn_ids(x, x, 1)[:, 0], np.arange(30))


def test_fuser_output_is_unit_norm_with_shapes_and_starts_as_identity():
    torch.manual_seed(0)
    fuser = RecoFuser(16, heads=4)
    q, r = torch.randn(5, 16), torch.randn(5, 3, 16)
    out = fuser(q, r)
    assert out.shape == (5, 16)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(out, torch.nn.functional.normalize(q, dim=-1))  # zero-initialised residual


def test_masked_retrieved_tokens_are_ignored():
    torch.manual_seed(1)
    fuser = RecoFuser(8, heads=2)
    for p in fuser.parameters():  # leave the identity init so attention matters
        torch.nn.init.normal_(p, std=0.3)
    q, r = torch.randn(2, 8), torch.randn(2, 3, 8)
    mask = torch.tensor([[False, True, False], [False, False, True]])
    r2 = r.clone()
    r2[mask] = 100.0  # garbage in masked slots
    fuser.train()  # plain (slow) path
    torch.testing.assert_close(fuser(q, r, mask), fuser(q, r2, mask))
    assert not torch.allclose(fuser(q, r), fuser(q, r2))


def naive_nce(a, b, tau):
    s = a @ b.T / tau
    n = len(a)
    i2t = -np.mean([s[i, i] - np.log(np.exp(s[i]).sum()) for i in range(n)])
    t2i = -np.mean([s[i, i] - np.log(np.exp(s[:, i]).sum()) for i in range(n)])
    return 0.5 * (i2t + t2i)


def test_reco_loss_is_sum_of_three_symmetric_infonce_terms():
    rng = np.random.default_rng(2)
    v, t, vb, tb = (unit_vectors(rng, 4, 6).astype(np.float64) for _ in range(4))
    tau = 0.5
    got = reco_loss(*(torch.from_numpy(a) for a in (v, t, vb, tb)), temperature=tau)
    expect = naive_nce(vb, tb, tau) + naive_nce(vb, t, tau) + naive_nce(v, tb, tau)
    assert float(got) == pytest.approx(expect, rel=1e-6)
    assert float(info_nce(torch.from_numpy(v), torch.from_numpy(t), tau)) == pytest.approx(naive_nce(v, t, tau))


def paired_memory(seed=0, m=96, dim=16, classes=6):
    """Images and texts of the same class share a concept; text sits across a modality gap with noise."""
    rng = np.random.default_rng(seed)
    concepts = unit_vectors(rng, classes, dim)
    lab = rng.integers(0, classes, m)
    gap = unit_vectors(rng, dim)
    img = concepts[lab] + 0.8 * unit_vectors(rng, m, dim) + 0.5 * gap
    txt = concepts[lab] + 0.8 * unit_vectors(rng, m, dim) - 0.5 * gap
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    return img.astype(np.float32), txt.astype(np.float32), knn_ids(img, img, 4), knn_ids(txt, txt, 4)


def test_train_reco_lowers_the_loss_and_excludes_own_pair():
    img, txt, inb, tnb = paired_memory()
    assert np.all(inb[:, 0] == np.arange(len(img)))  # own pair is every row's first neighbour: must be masked
    seen = []
    fi, ft, hist = train_reco(img, txt, inb, tnb, epochs=6, batch_size=32, lr=3e-3, seed=0, heads=2,
                              temperature=0.1, on_progress=seen.append, device="cpu")
    assert [h["epoch"] for h in hist] == list(range(1, 7)) and len(seen) == 6
    assert hist[-1]["loss"] < hist[0]["loss"]
    out = reco_refine(fi, img, txt[inb])
    assert out.shape == img.shape
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


def test_train_reco_resumes_from_a_checkpoint_like_an_uninterrupted_run(tmp_path):
    img, txt, inb, tnb = paired_memory(seed=1)
    kw = dict(batch_size=32, lr=3e-3, seed=3, heads=2, temperature=0.1, device="cpu")
    _, _, straight = train_reco(img, txt, inb, tnb, epochs=4, **kw)
    ckpt = tmp_path / "reco.pt"
    _, _, first = train_reco(img, txt, inb, tnb, epochs=2, checkpoint_path=ckpt, **kw)
    assert ckpt.exists() and len(first) == 2
    state = torch.load(ckpt, weights_only=True)  # checkpoints hold tensors and plain values only
    assert state["epoch"] == 2 and {"image_fuser", "text_fuser", "optimizer"} <= set(state)
    fi, _, resumed = train_reco(img, txt, inb, tnb, epochs=4, checkpoint_path=ckpt, **kw)
    assert [h["epoch"] for h in resumed] == [1, 2, 3, 4]
    np.testing.assert_allclose([h["loss"] for h in resumed], [h["loss"] for h in straight], rtol=1e-4)
    # resume=False starts over
    _, _, fresh = train_reco(img, txt, inb, tnb, epochs=1, checkpoint_path=ckpt, resume=False, **kw)
    assert len(fresh) == 1


def test_fuser_equals_a_full_pre_norm_encoder_layer_at_the_query_token():
    torch.manual_seed(2)
    fuser = RecoFuser(16, heads=4, ff_mult=2)
    for p in fuser.parameters():
        torch.nn.init.normal_(p, std=0.2)
    layer = torch.nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, dropout=0.0, activation="gelu",
                                             batch_first=True, norm_first=True)
    state = {k: v for k, v in fuser.state_dict().items() if k != "token_type"}
    layer.load_state_dict(state)
    layer.train()  # the reference (slow) path
    q, r = torch.randn(3, 16), torch.randn(3, 5, 16)
    mask = torch.zeros(3, 5, dtype=torch.bool)
    mask[1, 2] = True
    tokens = torch.cat([q[:, None] + fuser.token_type[0], r + fuser.token_type[1]], 1)
    full_mask = torch.cat([torch.zeros(3, 1, dtype=torch.bool), mask], 1)
    expect = torch.nn.functional.normalize(layer(tokens, src_key_padding_mask=full_mask)[:, 0], dim=-1)
    torch.testing.assert_close(fuser(q, r, mask), expect, atol=1e-5, rtol=1e-5)
