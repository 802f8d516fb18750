import numpy as np
import pytest
import torch
from PIL import Image

from clipdex.synthetic import COLORS, draw_shape
from retrieval.encode.encoder import load_encoder
from retrieval.errors import InvalidInput
from retrieval.io.imageprep import ImagePrep


def test_model_is_loaded_once_per_process(tiny):
    assert load_encoder("clipdex-tiny", device="cpu") is tiny


def test_outputs_are_unit_float32_rows(tiny):
    imgs = [draw_shape("circle", COLORS["red"]), draw_shape("square", COLORS["blue"], size=50)]
    x = tiny.encode_images(imgs)
    t = tiny.encode_texts(["a red circle", "a blue square", "x"])
    for a, n in ((x, 2), (t, 3)):
        assert a.dtype == np.float32 and a.shape == (n, tiny.dim)
        np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(x[0], x[1])


@pytest.mark.parametrize("size", [(100, 80), (37, 120), (64, 64), (640, 480)])
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_worker_preprocessing_matches_open_clip_preprocess(tiny, size, mode):
    rng = np.random.default_rng(sum(size))
    img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    ours = tiny.encode_images([img])
    # palette images are converted to RGB before resizing (open_clip resizes palette indices with NEAREST first)
    ref_img = img.convert("RGB") if mode == "P" else img
    with torch.no_grad():
        ref = tiny.model.encode_image(tiny.preprocess(ref_img)[None])
    ref = (ref / ref.norm(dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("mode", ["squash", "longest"])
def test_other_resize_modes_give_the_model_size(mode):
    prep = ImagePrep(size=(32, 32), resize_mode=mode)
    out = prep.prepare(Image.new("RGB", (90, 30), (10, 20, 30)))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_encode_texts_rejects_a_bare_string(tiny):
    with pytest.raises(InvalidInput):
        tiny.encode_texts("a red circle")


def test_unknown_precision_is_refused():
    with pytest.raises(InvalidInput, match="precision"):
        load_encoder("clipdex-tiny", device="cpu", precision="int3")
