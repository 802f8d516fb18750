"""Generated sample data, one home for all of it: drawn images, videos, synthetic embeddings, classification files.

Used by ``clipdex demo``, the tests, the notebooks and the benchmarks; every generator is seeded and deterministic,
and nothing is downloaded. The indexers never import this package.

- :mod:`.world` the generated world clipdex-tiny is trained on: scenes of 1-3 drawn objects (8 shapes, 11
  colours, sizes, positions, styles, backgrounds) and their rendering with variety; :mod:`.world_text` their
  captions, long descriptions and class prompts; :mod:`.world_video` videos with events at known times
- :mod:`.shapes` drawn shapes in colours (``make_shapes``, ``draw_shape``) and bad image files
- :mod:`.videos` generated videos with known frames (``make_videos``, ``scene_frame``), bad video files, and a
  raw-vector video index (``synthetic_video_index``)
- :mod:`.embeddings` seeded unit vectors, clustered corpora, clip-retrieval's output layout, CLIP-like problems
  (``make_clip_like``, ``make_ann_corpus``)
- :mod:`.texts` captions as notes, JSONL, CSV and Parquet files, and a text past the 77-token context
- :mod:`.classify` the files a classification run needs (``make_classify_files``)
"""
from clipdex.synthetic.shapes import (
                                     BACKGROUNDS,
                                     COLORS,
                                     SHAPES,
                                     draw_shape,
                                     make_bad_files,
                                     make_noisy_jpegs,
                                     make_shapes,
)

__all__ = ["BACKGROUNDS", "COLORS", "SHAPES", "draw_shape", "make_bad_files", "make_noisy_jpegs", "make_shapes"]
