"""Safe decoding of user images: one path for the app and the CLI.

The format is decided by the bytes (Pillow's ``formats=`` allow-list), never by
the file name. Every failure is an :class:`InputError` whose message is one
line naming the file, so a page or the CLI can show it and go on. Names are
only ever displayed, never used as paths.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".dib", ".tif", ".tiff")
MAX_BYTES = 25 * 1024 * 1024
"""The largest image file accepted (a video may be larger: :data:`dynviz.video.MAX_VIDEO_BYTES`, the upload
limit of .streamlit/config.toml)."""
REDUCING_GAP = 4.0
"""Every resize that shrinks an input by more than this first averages whole blocks of pixels (Pillow's
``reducing_gap``): a 12-megapixel photo to a network's 160 px view in 19 ms instead of 110, the same pixels
for any shrink below 4× (the photos the cards were measured on)."""
DECODED_SIDE = 1024
"""A JPEG whose shorter side is at least twice this is decoded at 1/2, 1/4 or 1/8 of its size (libjpeg scales
while it decodes: a 12-megapixel photo in 18 ms instead of 74), its shorter side kept at this or more: the
networks read at most a few hundred pixels of a photo, and every later resize is cheaper too."""
MAX_PIXELS = 40_000_000
"""Below Pillow's own decompression-bomb guard, which stays on as a second line."""
BACKGROUND = (255, 255, 255)


class InputError(ValueError):
    """A one-line, user-facing reason why a file cannot be analysed."""


@dataclass(frozen=True)
class InputImage:
    name: str
    """Display name only (never a path to open)."""
    image: Image.Image
    """RGB, EXIF orientation applied."""
    digest: str
    """sha256 of the original bytes: the cache key for results."""
    notes: tuple[str, ...] = ()
    """What was done to make it analysable (first frame of an animation, 16-bit rescaled …)."""
    file_size: tuple[int, int] | None = None
    """The file's own width and height where it was read at a smaller size (:data:`DECODED_SIDE`)."""

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def load_image(data: bytes, name: str) -> InputImage:
    """Decode ``data`` (the bytes of a file called ``name``) into an RGB image, or raise InputError."""
    if not data:
        raise InputError(f"{name}: the file is empty.")
    if len(data) > MAX_BYTES:
        raise InputError(f"{name}: {len(data) / 2**20:.1f} MB is over the {MAX_BYTES // 2**20} MB limit.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image, notes, file_size = _decode(data, name)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{name}: refused as a possible decompression bomb (too many pixels).") from None
    except UnidentifiedImageError:
        raise InputError(
            f"{name}: not an image this app reads (JPEG, PNG, WebP, GIF, BMP or TIFF), whatever its name says."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise InputError(f"{name}: the image is corrupt or truncated ({first_line(error)}).") from None
    digest = hashlib.sha256(data).hexdigest()
    return InputImage(name, image, digest, tuple(notes), file_size if file_size != image.size else None)


def load_image_file(path: str | os.PathLike[str]) -> InputImage:
    """Read a file named on the command line (a trusted path) and decode it like an upload."""
    return load_image(read_file(path, MAX_BYTES), str(path))


def read_file(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of a file named on the command line (a trusted path), refused above ``limit`` bytes before
    it is read; every failure is one line naming it."""
    path = Path(path)
    try:
        if (size := path.stat().st_size) > limit:
            raise InputError(f"{path}: {size / 2**20:.1f} MB is over the {limit // 2**20} MB limit.")
        return path.read_bytes()
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror or error}).") from None


def _decode(data: bytes, name: str) -> tuple[Image.Image, list[str], tuple[int, int]]:
    """The RGB image, notes on what was done to it, and the file's own size (upright)."""
    notes: list[str] = []
    image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise InputError(
            f"{name}: {width}×{height} is {width * height / 1e6:.0f} megapixels, over the {MAX_PIXELS / 1e6:.0f} MP limit."
        )
    suffix = Path(name).suffix.lower()
    if suffix in IMAGE_SUFFIXES and not _suffix_matches(suffix, image.format):
        notes.append(f"named {suffix} but the content is {image.format}; read as {image.format}")
    if image.format == "JPEG" and (scale := decoding_scale(image.size)) > 1:
        image.draft(image.mode, (-(-width // scale), -(-height // scale)))
    if getattr(image, "n_frames", 1) > 1:
        notes.append(f"{image.n_frames} frames (animation or pages): the first is analysed")
        image.seek(0)
    image.load()
    read_size = image.size
    image = ImageOps.exif_transpose(image)
    upright = (width, height) if image.size == read_size else (height, width)
    return _to_rgb(image, notes), notes, upright


def decoding_scale(size: tuple[int, int]) -> int:
    """The largest of 1, 2, 4 and 8 that keeps the shorter side at :data:`DECODED_SIDE` or more."""
    return next((scale for scale in (8, 4, 2) if min(size) // scale >= DECODED_SIDE), 1)


def _suffix_matches(suffix: str, image_format: str | None) -> bool:
    aliases = {
        "JPEG": (".jpg", ".jpeg", ".jpe"),
        "MPO": (".jpg", ".jpeg"),
        "TIFF": (".tif", ".tiff"),
        "BMP": (".bmp", ".dib"),
        "DIB": (".bmp", ".dib"),
    }
    return suffix in aliases.get(image_format or "", (f".{(image_format or '').lower()}",))


def _to_rgb(image: Image.Image, notes: list[str]) -> Image.Image:
    """Normalise every Pillow mode to 8-bit RGB without clipping or dropping alpha badly."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        notes.append(f"{_depth_name(image.mode)} image rescaled to 8 bits")
        return Image.fromarray(_rescale_to_uint8(np.asarray(image))).convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, BACKGROUND + (255,))
        notes.append("transparent areas shown on white")
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def _depth_name(mode: str) -> str:
    return {"F": "floating-point", "I": "32-bit"}.get(mode, "16-bit")


def _rescale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map the image's own range onto 0..255: by its bit depth where the values fit one
    (float 0..1, 8 or 16 bits), else by min–max; never by clipping."""
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values.ravel()
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if low >= 0 and high <= (1.0 if values.dtype.kind == "f" else 255):
        top = 1.0 if values.dtype.kind == "f" else 255.0
        low, high = 0.0, top
    elif values.dtype.kind != "f" and low >= 0 and high <= 65535:
        low, high = 0.0, 65535.0
    span = max(high - low, 1e-12)
    scaled = (np.nan_to_num(values.astype(np.float64), nan=low, posinf=high, neginf=low) - low) / span
    return np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
