import numpy as np
from PIL import Image

from retrieval.algorithms import augmented_views


def gradient_image(w=64, h=48):
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], -1))


def test_views_have_the_requested_count_and_size():
    views = augmented_views(gradient_image(), n_views=10, size=32, seed=0)
    assert len(views) == 10
    assert all(v.size == (32, 32) and v.mode == "RGB" for v in views)


def test_views_are_deterministic_under_a_seed_and_vary_across_seeds_and_views():
    img = gradient_image()
    a = [np.asarray(v) for v in augmented_views(img, n_views=4, size=32, seed=7)]
    b = [np.asarray(v) for v in augmented_views(img, n_views=4, size=32, seed=7)]
    c = [np.asarray(v) for v in augmented_views(img, n_views=4, size=32, seed=8)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert not np.array_equal(a[0], a[1])


def test_some_views_are_flipped():
    # left half black, right half white: a flipped crop is brighter on the left
    arr = np.zeros((64, 64, 3), np.uint8)
    arr[:, 32:] = 255
    views = augmented_views(Image.fromarray(arr), n_views=20, size=16, seed=0)
    left_brighter = [np.asarray(v)[:, :4].mean() > np.asarray(v)[:, -4:].mean() for v in views]
    assert 0 < sum(left_brighter) < 20


def test_grayscale_input_becomes_rgb():
    views = augmented_views(Image.new("L", (40, 30), 128), n_views=2, size=8, seed=0)
    assert all(v.mode == "RGB" for v in views)
