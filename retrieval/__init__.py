"""clipdex's library (internal): encoder, index directory and stores, search, video, long text and classification.

The public Python API is ``import clipdex``, whose functions call into here; the modules of this package may
change between versions. The library never prints: it logs through ``logging`` and reports progress through
callbacks. Importing the package itself loads nothing (``import clipdex`` stays cheap).
"""
