"""Safe decoding of user videos: one path for the app and the CLI.

A video file is probed and decoded by OpenCV (``opencv-python-headless``) in a worker process under a time
limit, so a malformed file can neither hang nor crash the app: the worker is killed at the limit, and a
crash of the decoder is a one-line :class:`~dynviz.inputs.InputError` naming the file, as for images.

What is kept of a clip is what the networks need: at most :data:`MAX_SECONDS` seconds and :data:`MAX_FRAMES`
frames, each downscaled to at most :data:`MAX_SIDE` pixels on its long side and held JPEG-compressed (a
60-second clip stays near a hundred megabytes, not gigabytes), with a thumbnail of every frame for the frame
strip and for cheap per-frame tests. Every cap that applied is a note shown with the clip.

This module does not import torch: the worker starts in a fraction of a second.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dynviz.inputs import InputError, InputImage, first_line, load_image, read_file

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".gif")
MAX_VIDEO_BYTES = 200 * 2**20
"""Matches ``server.maxUploadSize`` in .streamlit/config.toml (MB)."""
MAX_SECONDS = 60.0
MAX_FRAMES = 1800
MAX_SIDE = 720
"""Frames are downscaled to at most this many pixels on their long side."""
THUMBNAIL_SIDE = 96
JPEG_QUALITY = 90
DECODE_SECONDS = 120.0
"""The worker is killed after this long (a 60-second 4K clip decodes in well under it on two cores)."""
NO_FRAMES = "no video frames could be read (a video without frames, or an audio-only, corrupt or truncated file)."
VARIABLE_RATE = 0.1
"""Frame intervals whose spread exceeds this share of their mean: a variable-frame-rate clip."""


@dataclass(frozen=True)
class VideoInfo:
    """What the file says of itself (probed before decoding)."""

    frames: int
    """Frames the container declares (0 when it does not say)."""
    fps: float
    width: int
    height: int
    """As shown, after the rotation its metadata asks for."""
    rotation: int
    """Degrees the decoder turned the frames, from the file's metadata."""
    codec: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps if self.fps > 0 else 0.0


@dataclass(frozen=True, eq=False)
class InputVideo:
    name: str
    """Display name only (never a path to open)."""
    digest: str
    """sha256 of the original bytes: the cache key for results."""
    info: VideoInfo
    times: tuple[float, ...]
    """Each analysed frame's time in the clip, in seconds (from the file's timestamps)."""
    encoded: tuple[bytes, ...]
    """Each analysed frame, RGB, JPEG-compressed."""
    thumbnails: np.ndarray
    """[frames, h, w, 3] uint8: every frame with its long side at :data:`THUMBNAIL_SIDE`."""
    size: tuple[int, int]
    """(width, height) of the analysed frames."""
    notes: tuple[str, ...] = ()

    @property
    def frame_count(self) -> int:
        return len(self.encoded)

    def frame(self, index: int) -> InputImage:
        """Frame ``index`` as an input image (its digest names the clip and the frame)."""
        image = Image.open(io.BytesIO(self.encoded[index]), formats=("JPEG",))
        image.load()
        return InputImage(f"{self.name} · frame {index} ({self.times[index]:.2f} s)", image, f"{self.digest}#{index}")


def is_video(data: bytes) -> bool:
    """Whether ``data`` starts like a video container this module reads (the bytes decide, not the name):
    MP4/MOV (``ftyp``), Matroska/WebM, AVI, or a GIF with more than one frame."""
    if data[4:8] == b"ftyp" or data[:4] == b"\x1a\x45\xdf\xa3":
        return True
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return True
    if data[:6] in (b"GIF87a", b"GIF89a"):
        try:
            return getattr(Image.open(io.BytesIO(data)), "n_frames", 1) > 1
        except (OSError, ValueError, EOFError):
            return False
    return False


def has_video_suffix(name: str) -> bool:
    return Path(name).suffix.lower() in VIDEO_SUFFIXES[:-1]  # a .gif may be a still image


def load_video(data: bytes, name: str) -> InputVideo:
    """Decode ``data`` (the bytes of a file called ``name``) into frames, or raise InputError."""
    if not data:
        raise InputError(f"{name}: the file is empty.")
    if len(data) > MAX_VIDEO_BYTES:
        raise InputError(f"{name}: {len(data) / 2**20:.0f} MB is over the {MAX_VIDEO_BYTES // 2**20} MB limit.")
    if not is_video(data):
        raise InputError(
            f"{name}: not a video this app reads (MP4, MOV, WebM, MKV, AVI or GIF), whatever its name says."
        )
    with tempfile.TemporaryDirectory(prefix="dynviz-video-") as folder:
        source = Path(folder) / "clip"
        source.write_bytes(data)
        result = _run_worker(source, Path(folder), name)
        encoded = _split(Path(folder, "frames.bin").read_bytes(), result["offsets"])
        thumbnails = np.load(Path(folder, "thumbnails.npy"), allow_pickle=False)
    info = VideoInfo(**result["info"])
    return InputVideo(
        name=name,
        digest=hashlib.sha256(data).hexdigest(),
        info=info,
        times=tuple(result["times"]),
        encoded=encoded,
        thumbnails=thumbnails,
        size=tuple(result["size"]),
        notes=tuple(result["notes"]),
    )


def load_input(data: bytes, name: str) -> InputImage | InputVideo:
    """An upload or a file, as an image or a video: its bytes decide (a video's name only routes a file whose
    bytes are no video to the video path's message)."""
    if is_video(data) or (has_video_suffix(name) and data):
        return load_video(data, name)
    return load_image(data, name)


def load_input_file(path: str | os.PathLike[str]) -> InputImage | InputVideo:
    """Read a file named on the command line (a trusted path) and decode it like an upload."""
    return load_input(read_file(path, MAX_VIDEO_BYTES), str(path))


def _run_worker(source: Path, folder: Path, name: str) -> dict:
    worker = subprocess.Popen(
        [sys.executable, "-m", "dynviz.video", str(source), str(folder)],
        cwd=PACKAGE_ROOT,  # importable as ``dynviz`` whatever the app's or the command's working directory
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # FFmpeg's own complaints; the worker's verdict comes on stdout
        text=True,
    )
    timer = threading.Timer(DECODE_SECONDS, worker.kill)
    timer.start()
    result, error = None, None
    try:
        for line in worker.stdout:
            verb, _, rest = line.rstrip("\n").partition(" ")
            if verb == "error":
                error = rest
            elif verb == "done":
                result = json.loads(rest)
        worker.wait()
    finally:
        timed_out = not timer.is_alive() and worker.returncode is not None and worker.returncode < 0
        timer.cancel()
    if error is not None:
        raise InputError(f"{name}: {error}")
    if timed_out:
        raise InputError(f"{name}: decoding took longer than {DECODE_SECONDS:.0f} s; the file may be malformed.")
    if result is None:
        raise InputError(f"{name}: the video decoder failed on this file (corrupt or unsupported).")
    return result


def _split(blob: bytes, offsets: list[int]) -> tuple[bytes, ...]:
    return tuple(blob[start:end] for start, end in zip(offsets, offsets[1:]))


# The worker: ``python -m dynviz.video SOURCE FOLDER``. It answers on stdout with one line: "done JSON" (the
# frames themselves are in FOLDER) or "error ONE LINE".


def _probe(capture) -> VideoInfo:
    import cv2

    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC))
    codec = "".join(chr((fourcc >> 8 * i) & 0xFF) for i in range(4)).strip("\0 ") if fourcc > 0 else "?"
    rotation = int(capture.get(cv2.CAP_PROP_ORIENTATION_META)) % 360
    # With the decoder's automatic orientation (on by default), the frame size is already the turned one.
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    frames = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
    return VideoInfo(frames, float(capture.get(cv2.CAP_PROP_FPS) or 0.0), width, height, rotation, codec)


def _decode(source: str, folder: Path) -> dict:
    import cv2

    cv2.setNumThreads(1)
    capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG)
    if not capture.isOpened():
        raise InputError(NO_FRAMES)
    info = _probe(capture)
    fps = info.fps if 0 < info.fps <= 1000 else 30.0
    notes = []
    if info.rotation:
        notes.append(f"turned by {info.rotation}° as the clip's metadata asks")
    times, offsets, thumbnails, size, capped = [], [0], [], None, False
    with open(folder / "frames.bin", "wb") as frames:
        while True:
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            stamp = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            time_s = stamp if stamp > 0 or not times else len(times) / fps
            if len(times) >= MAX_FRAMES or time_s >= MAX_SECONDS:
                capped = True
                break
            frame = _fit(frame, MAX_SIDE)
            size = (frame.shape[1], frame.shape[0])
            ok, jpeg = cv2.imencode(".jpg", frame, (cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY))
            frames.write(jpeg.tobytes())
            offsets.append(offsets[-1] + len(jpeg))
            thumbnails.append(cv2.cvtColor(_fit(frame, THUMBNAIL_SIDE), cv2.COLOR_BGR2RGB))
            times.append(round(time_s, 4))
    if not times:
        raise InputError(NO_FRAMES)
    if capped:
        notes.append(
            f"only the first {len(times)} frames ({times[-1]:.0f} s) are analysed: at most {MAX_FRAMES} frames and {MAX_SECONDS:.0f} s"
        )
    elif info.frames > len(times) + 2:
        notes.append(
            f"{len(times)} of the {info.frames} frames the file declares could be decoded: it may be truncated"
        )
    if size != (info.width, info.height):
        notes.append(f"frames downscaled from {info.width}×{info.height} to {size[0]}×{size[1]}")
    intervals = np.diff(times)
    if len(intervals) > 2 and intervals.std() > VARIABLE_RATE * intervals.mean():
        notes.append("variable frame rate: frame times are taken from the file's timestamps")
    np.save(folder / "thumbnails.npy", _stack(thumbnails))
    return {"info": info.__dict__, "times": times, "offsets": offsets, "size": size, "notes": notes}


def _fit(frame: np.ndarray, side: int) -> np.ndarray:
    """``frame`` with its long side at most ``side``: halved by a Gaussian pyramid while that stays above
    ``side``, then bilinear (OpenCV's area average, for a shrink by a fraction, took 5× longer: the largest
    share of a 720p clip's decoding time)."""
    import cv2

    height, width = frame.shape[:2]
    size = (max(1, round(width * side / max(height, width))), max(1, round(height * side / max(height, width))))
    if size[0] >= width:
        return frame
    while frame.shape[1] >= 2 * size[0]:
        frame = cv2.pyrDown(frame)
    return cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)


def _stack(thumbnails: list[np.ndarray]) -> np.ndarray:
    """Thumbnails of one size (a clip whose frame size changes midway is padded to its first frame's)."""
    height, width = thumbnails[0].shape[:2]
    out = np.zeros((len(thumbnails), height, width, 3), np.uint8)
    for i, thumbnail in enumerate(thumbnails):
        h, w = min(height, thumbnail.shape[0]), min(width, thumbnail.shape[1])
        out[i, :h, :w] = thumbnail[:h, :w]
    return out


def _worker(source: str, folder: str) -> int:
    try:
        result = _decode(source, Path(folder))
    except InputError as error:
        print(f"error {error}", flush=True)
        return 1
    except Exception as error:  # any decoder failure is the file's, told in one line
        print(f"error the video could not be decoded ({first_line(error)}).", flush=True)
        return 1
    print("done " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_worker(*sys.argv[1:3]))
