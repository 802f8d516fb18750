"""clipdex: index images, videos and texts with CLIP, then search and classify them.

``import clipdex`` is the public Python API; the folders below it (``retrieval``, ``indexers``, ``cli``) are internal.
"""
from retrieval import *  # noqa: F401,F403  (filled in by the facade work)
