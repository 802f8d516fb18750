"""Image decoding and the PIL half of CLIP preprocessing, with no torch import.

The indexer's worker processes import only this module: they open files, guard against decompression bombs,
decode (JPEG at a reduced scale when the file is much larger than needed), resize and crop to the model's input
size, and hand back uint8 arrays. The float conversion and normalisation happen on the model's device
(``ClipEncoder.encode_prepared``), which keeps the bytes crossing process boundaries 4x smaller.

``ImagePrep.prepare`` reproduces open_clip's eval transform (``Resize`` + ``CenterCrop`` for the "shortest"
resize mode, a plain resize for "squash", resize-and-pad for "longest") so that both paths give the same vector;
``tests/test_encoder.py`` checks that against ``preprocess``.
"""
from __future__ import annotations

import hashlib
import io
import logging
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile

from retrieval.io.files import FileTooLarge, NotAFile, read_limited

log = logging.getLogger(__name__)
MAX_BYTES = 256 << 20  # larger image files are refused (indexed: an errors row; queried: InvalidInput)
MAX_PIXELS = 2 * 89_478_485   # larger images are refused before decoding (Pillow's own error threshold, held here
#                               whatever Image.MAX_IMAGE_PIXELS is set to)

_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST,
             "lanczos": Image.LANCZOS}


@dataclass(frozen=True)
class ImagePrep:
    """The model's input geometry: ``size`` (H, W), resize mode and interpolation (from open_clip's preprocess cfg)."""

    size: tuple[int, int] = (224, 224)
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"
    fill_color: int = 0

    def prepare(self, img: Image.Image) -> np.ndarray:
        """PIL image (any mode) -> (H, W, 3) uint8, resized and cropped as the model's preprocess does."""
        img = to_rgb(img)
        th, tw = self.size
        short = min(img.size)
        if short >= 2048 and short >= 6 * max(th, tw):
            # a huge non-JPEG (JPEGs are drafted at decode): box-reduce by an integer factor first, keeping at
            # least 3x the target, so the bicubic resize below does not have to touch every source pixel
            img = img.reduce(max(1, short // (3 * max(th, tw))))
        resample = _RESAMPLE.get(self.interpolation, Image.BICUBIC)
        w, h = img.size
        if self.resize_mode == "squash":
            img = img.resize((tw, th), resample)
        elif self.resize_mode == "longest":
            scale = min(th / h, tw / w)
            nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
            img = img.resize((nw, nh), resample)
            canvas = Image.new("RGB", (tw, th), (self.fill_color,) * 3)
            canvas.paste(img, ((tw - nw) // 2, (th - nh) // 2))
            img = canvas
        else:  # "shortest": torchvision Resize(int) then CenterCrop
            short = min(th, tw) if th != tw else th
            if w <= h:
                nw, nh = short, int(short * h / w)
            else:
                nh, nw = short, int(short * w / h)
            if (nw, nh) != (w, h):
                img = img.resize((nw, nh), resample)
            left = int(round((nw - tw) / 2.0))
            top = int(round((nh - th) / 2.0))
            img = img.crop((left, top, left + tw, top + th))
        return np.asarray(img, dtype=np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB (palette images with transparency go through RGBA first)."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


class ImageReadError(Exception):
    """A file could not be read or decoded; ``stage`` is "read" or "decode"."""

    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


class ImageTooLarge(ImageReadError):
    """An image with more pixels than the reader accepts (refused from its header, before decoding)."""

    def __init__(self, reason: str):
        super().__init__("decode", reason)


def content_hash(data: bytes) -> str:
    """Content hash of a file's bytes (BLAKE2b, 128 bits, hex): recognises renamed and copied files."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def open_image(data: bytes, target: tuple[int, int] | None = None, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode image bytes fully, refusing more than ``max_pixels`` pixels.

    ``target`` lets JPEG decode at a reduced scale (``draft``) when the image is far larger than needed; the
    result is never smaller than ``target`` on its short side. Raises ``ImageReadError`` on any failure, and
    ``ImageTooLarge`` for an image over ``max_pixels`` (read from the header: ``Image.open`` is lazy, so nothing is
    decoded); the bound holds whatever Pillow's global ``Image.MAX_IMAGE_PIXELS`` says. A very large image within
    it (Pillow's ``DecompressionBombWarning``) is decoded and logged as a warning, never printed as a raw warning.
    """
    if not data:
        raise ImageReadError("read", "empty file (0 bytes)")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            check_pixels(img.size, max_pixels)
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            if target is not None and img.format == "JPEG":
                img.draft("RGB", (max(target), max(target)))
            img.load()
        for w in caught:
            if issubclass(w.category, Image.DecompressionBombWarning):
                log.warning("very large image: %s", w.message)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"too large: {exc}") from exc
    except Image.UnidentifiedImageError:
        raise ImageReadError("decode", "not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError("decode", f"corrupt or truncated image: {exc}") from exc
    return img


def check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    """Refuse (``ImageTooLarge``) an image of ``size`` (width, height) over ``max_pixels`` pixels."""
    width, height = size
    if width * height > max_pixels:
        raise ImageTooLarge(f"too large: {width}x{height} pixels ({width * height / 1e6:.1f} MP); at most "
                            f"{max_pixels / 1e6:g} MP are decoded")


def read_image_file(path: str, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of an image file, read with the same checks for the indexer and for a query: a regular file (a
    FIFO, a device or a folder is refused before a byte is read) of at most ``max_bytes`` (never read further).
    Raises ``ImageReadError`` (stage "read")."""
    try:
        return read_limited(path, max_bytes)
    except (NotAFile, FileTooLarge) as exc:
        raise ImageReadError("read", str(exc)) from None
    except OSError as exc:
        raise ImageReadError("read", f"unreadable: {exc.strerror or exc}") from exc


def read_and_prepare(path: str, prep: ImagePrep, max_bytes: int = MAX_BYTES) -> tuple[np.ndarray, str, int, int]:
    """Read a file, hash it, decode and prepare it: -> (pixels (H,W,3) uint8, hash, width, height).

    Raises ``ImageReadError`` with the failing stage.
    """
    return prepare_bytes(read_image_file(path, max_bytes), prep)


def prepare_bytes(data: bytes, prep: ImagePrep) -> tuple[np.ndarray, str, int, int]:
    """Image bytes (a file's, or a tar member's) -> (pixels (H,W,3) uint8, hash, width, height).

    Raises ``ImageReadError`` (stage "decode")."""
    img, width, height = decode_bytes(data, prep.size)
    return prepare_decoded(img, prep), content_hash(data), width, height


def decode_bytes(data: bytes, target: tuple[int, int]) -> tuple[Image.Image, int, int]:
    """Image bytes -> (the picture, decoded no smaller than ``target`` (a JPEG drafted), the file's width and
    height as its header says). Raises ``ImageReadError``."""
    img = open_image(data, target)
    width, height = img.size  # after draft these are the reduced sizes; report the header's size instead
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # already logged by open_image
            width, height = Image.open(io.BytesIO(data)).size
    except Exception:
        pass
    return img, width, height


def prepare_decoded(img: Image.Image, prep: ImagePrep) -> np.ndarray:
    """A decoded picture -> the model's input (H, W, 3) uint8. Raises ``ImageReadError`` (stage "decode")."""
    try:
        return prep.prepare(img)
    except (OSError, ValueError) as exc:
        raise ImageReadError("decode", f"corrupt or truncated image: {exc}") from exc


# Truncated files must fail, not be padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
