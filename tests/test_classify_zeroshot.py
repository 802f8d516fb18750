import numpy as np
import pytest
import torch

from retrieval.algorithms import (
    TEMPLATE_SETS,
    build_text_classifier,
    get_templates,
    load_descriptions,
    load_templates,
    zeroshot_logits,
)
from retrieval.algorithms.zeroshot import class_prompts


def fake_encoder(dim=8):
    """Deterministic 'text encoder': a hash-seeded vector per string, not normalised (the classifier must)."""
    calls = []

    def encode(texts):
        calls.append(list(texts))
        out = []
        for t in texts:
            rng = np.random.default_rng(sum(ord(ch) * (i + 1) for i, ch in enumerate(t)))
            out.append(rng.standard_normal(dim) * 3.0)
        return np.asarray(out, dtype=np.float32)

    encode.calls = calls
    return encode


def test_classifier_averages_normalised_prompt_embeddings_and_renormalises():
    enc = fake_encoder()
    templates = ["a photo of a {}.", "a sketch of the {}."]
    w = build_text_classifier(["golden_retriever", "cat"], templates, enc)
    assert w.shape == (8, 2) and w.dtype == np.float32
    for c, name in enumerate(["golden retriever", "cat"]):
        e = enc([t.replace("{}", name) for t in templates]).astype(np.float64)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        m = e.mean(0)
        np.testing.assert_allclose(w[:, c], m / np.linalg.norm(m), atol=1e-6)


def test_underscores_become_spaces_and_descriptions_are_appended():
    prompts = class_prompts("sea_lion", ["a photo of a {}."], {"sea_lion": ["a marine mammal."]})
    assert prompts == ["a photo of a sea lion.", "a marine mammal."]
    # descriptions keyed by the cleaned name are found too
    assert class_prompts("sea_lion", ["{}"], {"sea lion": ["x"]}) == ["sea lion", "x"]


def test_descriptions_change_only_their_class_column():
    enc = fake_encoder()
    base = build_text_classifier(["a", "b"], ["{}"], enc)
    with_desc = build_text_classifier(["a", "b"], ["{}"], enc, descriptions={"b": ["some words about b"]})
    np.testing.assert_allclose(base[:, 0], with_desc[:, 0], atol=1e-7)
    assert not np.allclose(base[:, 1], with_desc[:, 1])


def test_prompts_are_batched_across_classes():
    enc = fake_encoder()
    w_small = build_text_classifier(["a", "b", "c"], ["{}", "x {}"], enc, batch_size=4)
    assert [len(c) for c in enc.calls] == [4, 2]
    w_big = build_text_classifier(["a", "b", "c"], ["{}", "x {}"], enc, batch_size=100)
    np.testing.assert_allclose(w_small, w_big, atol=1e-7)


def test_zeroshot_logits_are_100_f_w_and_accept_torch():
    rng = np.random.default_rng(0)
    f, w = rng.standard_normal((3, 5)), rng.standard_normal((5, 4))
    out = zeroshot_logits(torch.from_numpy(f), w)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 100 * f @ w, rtol=1e-5)


def test_template_sets_come_from_open_clip():
    assert get_templates("single") == ["a photo of a {}."]
    assert len(get_templates("openai80")) == 80 and len(get_templates("simple7")) == 7
    assert all("{}" in t for t in TEMPLATE_SETS["openai80"])
    for name in TEMPLATE_SETS:  # every set offered loads by its name and formats a class name
        assert get_templates(name) == list(TEMPLATE_SETS[name])
        assert all("cat" in t.format("cat") for t in get_templates(name))
    with pytest.raises(ValueError, match="unknown template set"):
        get_templates("nope")


def test_template_file_loader_skips_comments_and_rejects_lines_without_braces(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("# mine\na photo of a {}.\n\n  a drawing of a {}.  \n", encoding="utf-8")
    assert load_templates(p) == ["a photo of a {}.", "a drawing of a {}."]
    p.write_text("a photo of a {}.\na photo\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"t.txt:2"):
        load_templates(p)


def test_descriptions_loader(tmp_path):
    p = tmp_path / "d.json"
    p.write_text('{"cat": ["a small feline.", " "], "dog": "a pet."}', encoding="utf-8")
    assert load_descriptions(p) == {"cat": ["a small feline."], "dog": ["a pet."]}
    p.write_text('{"cat": [1]}', encoding="utf-8")
    with pytest.raises(ValueError):
        load_descriptions(p)
