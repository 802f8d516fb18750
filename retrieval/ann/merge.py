"""Merge FAISS indexes filled in parallel: copies of one trained empty index, each holding a partition of the rows
(``clipdex optimize --engine ray``), become one index of the same structure, as if every row had been added to it.

The structures are the ANN records' (``retrieval.ann.structures.build_index``), an ``IndexIDMap2`` (row ids) over:

- IVF with flat, SQ8 or fast-scan PQ lists: each list appended (faiss's ``merge_from``; fast-scan lists, which it
  gets wrong, through their own ``add_entries``); the lists' labels are positions in the id map, so the merged
  copy's are shifted past the rows already held and its ids appended;
- IVF fast-scan PQ refined by float16 or float32 vectors (``IndexRefine``): the same for the IVF part, whose labels
  are positions in the refinement codes too, and those codes appended in the same order (faiss refuses
  ``merge_from`` on the refine wrapper itself);
- HNSW cannot be merged (each copy's graph links only its own rows): :func:`unmergeable` says so, and the caller
  builds it in one process.

faiss is a heavy optional dependency, imported in each function.
"""
from __future__ import annotations

import numpy as np


def _faiss():
    import faiss  # heavy optional dependency, loaded on first use

    return faiss


def unmergeable(index) -> str | None:
    """Why copies of ``index`` (an ``IndexIDMap2`` over a trained structure, or a bare IVF whose labels the caller
    chooses) cannot be merged; None when they can."""
    faiss = _faiss()
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexRefine):
        inner = faiss.downcast_index(inner.base_index)
    if isinstance(inner, faiss.IndexHNSW):
        return "an HNSW graph cannot be merged (each copy links only its own rows)"
    if not isinstance(inner, faiss.IndexIVF):
        return f"{type(inner).__name__} has no inverted lists to merge"
    return None


def merge_into(dst, src) -> None:
    """Move the rows of ``src`` into ``dst``: both ``IndexIDMap2`` copies of one trained index (``unmergeable``
    None). ``dst`` then holds its rows followed by ``src``'s; ``src`` is left empty (faiss moves the lists)."""
    faiss = _faiss()
    d_in, s_in = faiss.downcast_index(dst.index), faiss.downcast_index(src.index)
    held = int(d_in.ntotal)
    if isinstance(d_in, faiss.IndexRefine):
        _merge_ivf(faiss.downcast_index(d_in.base_index), faiss.downcast_index(s_in.base_index), held)
        faiss.downcast_index(d_in.refine_index).merge_from(faiss.downcast_index(s_in.refine_index), 0)
        d_in.ntotal = held + int(s_in.ntotal)
        s_in.ntotal = 0
    else:
        _merge_ivf(d_in, s_in, held)  # the id map's positions: the merged labels follow the rows already held
    ids = np.concatenate([faiss.vector_to_array(dst.id_map), faiss.vector_to_array(src.id_map)]).astype(np.int64)
    faiss.copy_array_to_vector(ids, dst.id_map)
    dst.ntotal = len(ids)
    dst.construct_rev_map()
    src.id_map.clear()
    src.ntotal = 0
    src.construct_rev_map()


def merge_lists(dst, src) -> None:
    """Move the rows of bare IVF ``src`` into ``dst`` (copies of one trained index, labels chosen by the caller and
    kept); ``src`` is left empty."""
    faiss = _faiss()
    _merge_ivf(faiss.downcast_index(dst), faiss.downcast_index(src), 0)


def _merge_ivf(dst, src, shift: int) -> None:
    """The lists of IVF ``src`` appended to ``dst``'s, labels + ``shift``. Fast-scan lists are packed in blocks,
    which faiss's ``merge_from`` copies as plain codes (their ``code_size`` is not a code's: the heap is corrupted);
    they are appended with the lists' own ``add_entries`` (packed codes in), except where that call is broken (a
    list already holding a multiple of ``block_size`` entries: a whole-block copy at the wrong place), where the
    list is repacked whole (:func:`_repack`)."""
    faiss = _faiss()
    dl = faiss.downcast_InvertedLists(dst.invlists)
    if not isinstance(dl, faiss.BlockInvertedLists):
        dst.merge_from(src, shift)
        return
    sl = faiss.downcast_InvertedLists(src.invlists)
    packer = dst.get_CodePacker()
    for lst in range(sl.nlist):
        n = sl.list_size(lst)
        if not n:
            continue
        ids = faiss.rev_swig_ptr(sl.get_ids(lst), n).astype(np.int64) + shift
        held = dl.list_size(lst)
        if held == 0 or held % dl.block_size:
            dl.add_entries(lst, n, faiss.swig_ptr(ids), sl.get_codes(lst))
        else:
            _repack(faiss, dl, sl, lst, ids, packer)
    dst.ntotal += src.ntotal
    src.reset()


def _repack(faiss, dl, sl, lst: int, ids: np.ndarray, packer) -> None:
    """List ``lst`` of block lists ``dl`` rewritten as its entries followed by ``sl``'s (labels ``ids``)."""
    per, size = int(packer.nvec), int(packer.block_size)

    def flat(lists, n):  # the list's codes unpacked, (n, code_size)
        blocks = -(-n // per)
        packed = faiss.rev_swig_ptr(lists.get_codes(lst), blocks * size).copy()
        out = np.empty((blocks * per, int(packer.code_size)), np.uint8)
        for b in range(blocks):
            packer.unpack_all(faiss.swig_ptr(packed[b * size:]), faiss.swig_ptr(out[b * per:]))
        return out[:n]

    held = dl.list_size(lst)
    codes = np.concatenate([flat(dl, held), flat(sl, len(ids))])
    labels = np.concatenate([faiss.rev_swig_ptr(dl.get_ids(lst), held).astype(np.int64), ids])
    blocks = -(-len(labels) // per)
    padded = np.zeros((blocks * per, codes.shape[1]), np.uint8)
    padded[:len(codes)] = codes
    packed = np.zeros(blocks * size, np.uint8)
    for b in range(blocks):
        packer.pack_all(faiss.swig_ptr(padded[b * per:]), faiss.swig_ptr(packed[b * size:]))
    dl.resize(lst, 0)
    dl.add_entries(lst, len(labels), faiss.swig_ptr(labels), faiss.swig_ptr(packed))


def to_bytes(index) -> np.ndarray:
    """The index serialised (uint8), to ship between processes."""
    return _faiss().serialize_index(index)


def from_bytes(data: np.ndarray):
    """An index from :func:`to_bytes`' bytes."""
    return _faiss().deserialize_index(np.asarray(data, np.uint8))  # of its own type (IndexIDMap2...)
