"""Seeded small problems shared by the tests of retrieval.classify."""

import numpy as np


def unit(rng, *shape):
    x = rng.standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def clustered(rng, num_classes=4, per_class=5, dim=16, noise=0.5):
    """Class centres (C, D) and unit samples (C*per_class, D) with labels, grouped by class."""
    centres = unit(rng, num_classes, dim)
    labels = np.repeat(np.arange(num_classes), per_class)
    x = centres[labels] + noise * rng.standard_normal((labels.size, dim)).astype(np.float32) / np.sqrt(dim)
    return centres, (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels
