
import numpy as np
import pytest
from PIL import Image

from clipdex.synthetic import COLORS, draw_shape, make_bad_files
from retrieval.io.imageprep import ImagePrep, ImageReadError, content_hash, read_and_prepare

PREP = ImagePrep(size=(32, 32))


def test_bad_files_fail_with_their_stage(tmp_path):
    bad = make_bad_files(tmp_path)
    stages = {}
    for path in bad:
        with pytest.raises(ImageReadError) as err:
            read_and_prepare(path, PREP)
        stages[bad[path]] = (err.value.stage, err.value.reason)
    assert stages["empty"][0] == "read" and "0 bytes" in stages["empty"][1]
    assert stages["truncated"][0] == "decode" and "truncated" in stages["truncated"][1]
    assert stages["not an image"][0] == "decode" and "not an image" in stages["not an image"][1]
    with pytest.raises(ImageReadError) as err:
        read_and_prepare(str(tmp_path / "missing.png"), PREP)
    assert err.value.stage == "read"


def test_decompression_bomb_guard_stays_on(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 300*300 > 2 * 1000: Pillow refuses
    with pytest.raises(ImageReadError, match="too large"):
        read_and_prepare(str(path), PREP)


def test_file_size_limit(tmp_path):
    path = tmp_path / "a.png"
    draw_shape("circle", COLORS["red"]).save(path)
    with pytest.raises(ImageReadError, match="too large"):
        read_and_prepare(str(path), PREP, max_bytes=10)


def test_large_jpeg_is_drafted_but_reports_its_real_size(tmp_path):
    path = tmp_path / "big.jpg"
    draw_shape("square", COLORS["blue"], size=2000).save(path, quality=90)
    pixels, digest, w, h = read_and_prepare(str(path), PREP)
    assert (w, h) == (2000, 2000) and pixels.shape == (32, 32, 3)
    assert digest == content_hash(path.read_bytes())
    # the drafted decode still looks like the full decode
    full = PREP.prepare(Image.open(path))
    assert np.abs(full.astype(int) - pixels.astype(int)).mean() < 3


def test_huge_images_are_reduced_before_resizing_without_changing_the_result_much():
    big = draw_shape("star", COLORS["purple"], size=2400)
    prep = ImagePrep(size=(64, 64))
    fast = prep.prepare(big)
    slow = np.asarray(big.resize((64, 64), Image.BICUBIC))
    assert fast.shape == (64, 64, 3) and np.abs(fast.astype(int) - slow.astype(int)).mean() < 2
