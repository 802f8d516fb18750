"""The classification pipeline: gathers inputs (images, class prompts, support sets retrieved from an index, few-shot
examples) for the pure functions of :mod:`retrieval.algorithms`, runs the methods in blocks and scores them."""
