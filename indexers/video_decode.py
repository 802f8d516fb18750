"""Video decoding for the indexer's worker processes (no torch import): sampling plans, streamed decode, a pool.

``iter_video`` opens one file with PyAV and decodes it sequentially (no seeking), picking the frame on screen at
each sampling time and preparing it with the encoder's ``ImagePrep`` (uint8 arrays, as images are). It yields
small messages, never the whole video:

- ``("info", VideoInfo)``                         once, after the container opened
- ``("frames", frame_index, t, pixels)``          lists of at most ``piece`` frames: (n,), (n,), (n, H, W, 3) uint8
- ``("end", error)``                              last; ``error`` is None or ``(stage, reason)``

A failure before the first frame ends the video with an error and no frames; a failure after some frames (a
decoder error, a stream that stops well before its stated duration: truncated or garbled files, or damaged data
that FFmpeg skipped with an error in its log) ends it with an error *after* those frames: the indexer keeps them
and marks the video ``partial``. A still image in a video's clothing (a PNG renamed ``.mp4``) is no video.

``stream_decode`` runs ``iter_video`` over many videos in spawned worker processes and yields ``(key, message)``
pairs as they come, through a bounded queue (so decoded pixels never pile up when the model is slower). A worker
that dies takes only its current video with it, reported as ``("end", ("decode", "decoder process crashed"))``.
"""
from __future__ import annotations

import hashlib
import logging
import math
import multiprocessing as mp
import os
import queue as _queue
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from retrieval.algorithms.video import sample_times_chunks, sample_times_fps
from retrieval.errors import InvalidInput
from retrieval.io.files import open_regular
from retrieval.io.imageprep import ImagePrep

INSTALL_HINT = "video support needs PyAV: pip install clipdex[video]"


def import_av():
    """PyAV, imported lazily; ``InvalidInput`` naming the extra when it is missing."""
    try:
        import av  # optional and heavy: only video commands need PyAV
    except ImportError:
        raise InvalidInput(INSTALL_HINT) from None
    return av


@dataclass(frozen=True)
class SamplingPlan:
    """Which frames to keep: ``fps`` per second, ``frames`` = the middle of N equal chunks, or every keyframe."""

    mode: str = "fps"       # "fps" | "frames" | "keyframes"
    value: float = 1.0

    @classmethod
    def from_options(cls, fps: float | None = None, frames: int | None = None,
                     keyframes: bool = False) -> "SamplingPlan":
        """One plan from CLI-style options (at most one of them; none = 1 frame a second); ``InvalidInput`` if bad."""
        given = sum([fps is not None, frames is not None, bool(keyframes)])
        if given > 1:
            raise InvalidInput("choose one sampling: --fps, --frames or --keyframes")
        if frames is not None:
            if isinstance(frames, bool) or int(frames) != frames or frames < 1:
                raise InvalidInput(f"--frames must be a positive whole number, got {frames}")
            return cls("frames", int(frames))
        if keyframes:
            return cls("keyframes", 0)
        rate = 1.0 if fps is None else float(fps)
        if not (math.isfinite(rate) and rate > 0):
            raise InvalidInput(f"--fps must be a positive number of frames per second, got {fps}")
        return cls("fps", rate)

    def describe(self) -> str:
        """Stored in each ``videos`` row: a video sampled differently is re-indexed."""
        if self.mode == "keyframes":
            return "keyframes"
        return f"{self.mode}={self.value:g}"


@dataclass
class VideoInfo:
    duration: float | None   # seconds (container or stream header; None when unknown)
    fps: float | None        # the stream's average frame rate
    width: int
    height: int
    codec: str
    hash: str | None = None  # content hash of the file (BLAKE2b-128, as for images)


def file_hash(path: str, block: int = 1 << 20) -> str:
    """Content hash of a file read in blocks (never whole): the same digest as ``imageprep.content_hash``.
    Only a regular file is opened (``retrieval.io.files.NotAFile`` otherwise)."""
    h = hashlib.blake2b(digest_size=16)
    with open_regular(path) as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


class _Picker:
    """Turns a stream of (time, frame) into the frames on screen at the sampling times, each frame at most once."""

    def __init__(self, plan: SamplingPlan, duration: float | None):
        self.plan = plan
        if plan.mode == "frames":
            self.times = sample_times_chunks(duration, int(plan.value))
        elif plan.mode == "fps" and duration is not None:
            self.times = sample_times_fps(duration, plan.value)
        else:
            self.times = None  # open-ended fps sampling (unknown duration) or keyframes
        self.j = 0
        self.last_picked = -1

    def _time(self, j: int) -> float:
        return float(self.times[j]) if self.times is not None else j / self.plan.value

    def _more(self, j: int) -> bool:
        return self.times is None or j < len(self.times)

    def step(self, index: int, t: float, prev) -> list:
        """Frame ``index`` at time ``t`` arrived; ``prev`` = (index, t, frame) of the one before. Returns picks."""
        if self.plan.mode == "keyframes":
            return [(index, t, None)]
        picks = []
        while self._more(self.j) and self._time(self.j) < t - 1e-6:  # the sample time fell on the previous frame
            pick = prev if prev is not None else (index, t, None)
            if pick[0] != self.last_picked:
                picks.append(pick)
                self.last_picked = pick[0]
            self.j += 1
        return picks

    def finish(self, prev, frame_interval: float) -> list:
        """End of stream: sample times up to one frame interval past the last frame show the last frame (later
        ones, past the end of a truncated stream, show nothing)."""
        if prev is None or self.plan.mode == "keyframes":
            return []
        limit = prev[1] + max(frame_interval, 1e-3)
        picks = []
        while self._more(self.j) and self._time(self.j) < limit - 1e-6:
            if prev[0] != self.last_picked:
                picks.append(prev)
                self.last_picked = prev[0]
            self.j += 1
        return picks


def _open(av, path: str):
    """-> (container, stream, info) or raise _Fail(stage, reason)."""
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.error.InvalidDataError:
        raise _Fail("decode", "not a video, or corrupt (unrecognised format)") from None
    except (av.error.FileNotFoundError, av.error.PermissionError, FileNotFoundError, PermissionError) as exc:
        raise _Fail("read", f"unreadable: {exc}") from None
    except av.error.FFmpegError as exc:
        raise _Fail("decode", f"cannot open: {exc}") from None
    fmt = container.format.name
    if fmt.endswith("_pipe") or fmt == "image2":  # FFmpeg reads a still image as a one-frame "video"
        container.close()
        raise _Fail("decode", f"not a video: a {fmt.removesuffix('_pipe')} image")
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        raise _Fail("decode", "no video stream (audio only)" if "audio" in kinds else
                    f"no video stream (streams: {', '.join(kinds) or 'none'})")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        container.close()
        raise _Fail("decode", "corrupt or undecodable: the video stream's codec is unknown (a damaged file, or a "
                    "codec this PyAV build cannot decode)")
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        duration = None
    rate = stream.average_rate or stream.guessed_rate
    info = VideoInfo(duration, float(rate) if rate else None, int(stream.codec_context.width or 0),
                     int(stream.codec_context.height or 0), stream.codec_context.name)
    return container, stream, info


class _Fail(Exception):
    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage, self.reason = stage, reason


def iter_video(path: str, plan: SamplingPlan, prep: ImagePrep, piece: int = 16) -> Iterator[tuple]:
    """Decode one video and yield its sampled, prepared frames in pieces (see the module docstring)."""
    av = import_av()
    try:
        if os.path.getsize(path) == 0:
            raise _Fail("read", "empty file (0 bytes)")
        digest = file_hash(path)
        container, stream, info = _open(av, path)
        info.hash = digest
    except OSError as exc:
        yield ("end", ("read", f"unreadable: {exc.strerror or exc}"))
        return
    except _Fail as exc:
        yield ("end", (exc.stage, exc.reason))
        return
    if plan.mode == "frames" and info.duration is None:
        container.close()
        yield ("end", ("decode", "duration unknown: sample this video with --fps instead of --frames"))
        return
    yield ("info", info)
    picker = _Picker(plan, info.duration)
    if plan.mode == "keyframes":
        stream.codec_context.skip_frame = "NONKEY"
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0
    buf_i, buf_t, buf_px = [], [], []
    prev = None
    count = 0
    error = None

    def take(picks):
        for idx, t, frame in picks:
            img = (frame if frame is not None else current).to_image()
            buf_i.append(idx)
            buf_t.append(max(0.0, t))
            buf_px.append(prep.prepare(img))

    level = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)  # FFmpeg reports data it skipped as damaged at this level
    try:
        with av.logging.Capture() as damage:
            for current in container.decode(stream):
                t = current.time - start if current.time is not None else count / (info.fps or 1.0)
                take(picker.step(count, t, prev))
                prev = (count, t, current)
                count += 1
                if len(buf_i) >= piece:
                    yield ("frames", buf_i, buf_t, np.stack(buf_px))
                    buf_i, buf_t, buf_px = [], [], []
            take(picker.finish(prev, 1.0 / info.fps if info.fps else 0.0))
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        error = ("decode", f"failed mid-stream after {count} frames: {exc}")
    finally:
        container.close()
        av.logging.set_level(level)
    if error is None and count == 0:
        error = ("decode", "no frames could be decoded (corrupt file?)")
    elif error is None and info.duration is not None and prev is not None and plan.mode != "keyframes":
        gap = max(1.0, 3.0 / (info.fps or 1.0))
        if info.duration - prev[1] > gap:
            error = ("decode", f"stream ends at {prev[1]:.2f}s of {info.duration:.2f}s (truncated or corrupt)")
    if error is None and count and damage:  # frames went missing: the decoder skipped damaged data
        error = ("decode", f"damaged data skipped while decoding ({len(damage)} decoder errors, first: "
                           f"{damage[0][1]}: {damage[0][2].strip()})")
    if buf_i:
        yield ("frames", buf_i, buf_t, np.stack(buf_px))
    yield ("end", error)


# ----------------------------------------------------------------------------------------------------------------
# the decoding pool
# ----------------------------------------------------------------------------------------------------------------
def _worker(tasks, results, plan, prep, piece) -> None:
    """Worker process: take (key, path) tasks until None; put (key, message) results (blocking when full)."""
    logging.getLogger("libav").setLevel(logging.CRITICAL)
    while True:
        task = tasks.get()
        if task is None:
            results.put((None, ("exit",)))
            return
        key, path = task
        results.put((key, ("start", mp.current_process().name)))
        try:
            for msg in iter_video(path, plan, prep, piece):
                results.put((key, msg))
        except Exception as exc:  # a decoder bug must not stop the run
            results.put((key, ("end", ("decode", f"{type(exc).__name__}: {exc}"))))


def stream_decode(videos: Sequence[tuple[object, str]], plan: SamplingPlan, prep: ImagePrep, workers: int,
                  piece: int = 16, inflight: int | None = None) -> Iterator[tuple[object, tuple]]:
    """Decode ``videos`` = [(key, path)] and yield ``(key, message)``; ``workers == 0`` decodes in this process.

    Messages of different videos interleave; each video's own messages stay in order and end with "end".
    """
    if workers <= 0:
        for key, path in videos:
            for msg in iter_video(path, plan, prep, piece):
                yield key, msg
        return
    ctx = mp.get_context("spawn")  # never fork a process that holds torch threads
    tasks = ctx.Queue()
    for v in videos:
        tasks.put(v)
    workers = max(1, min(workers, len(videos)))
    results = ctx.Queue(maxsize=inflight or 4 * workers)
    procs: dict[str, mp.Process] = {}
    current: dict[str, object] = {}   # worker name -> key of the video it decodes
    open_keys = {k for k, _ in videos}
    crashed: set[str] = set()
    exited = 0

    def spawn():
        tasks.put(None)  # one stop sentinel per worker started
        p = ctx.Process(target=_worker, args=(tasks, results, plan, prep, piece), daemon=True)
        p.start()
        procs[p.name] = p

    for _ in range(workers):
        spawn()
    try:
        while exited < len(procs) - len(crashed):
            try:
                key, msg = results.get(timeout=0.5)
            except _queue.Empty:
                for name, p in list(procs.items()):
                    if name in crashed or p.exitcode in (None, 0):
                        continue
                    crashed.add(name)  # died (segfault, OOM kill): its video fails, a new worker goes on
                    lost = current.pop(name, None)
                    if lost in open_keys:
                        open_keys.discard(lost)
                        yield lost, ("end", ("decode", f"decoder process crashed (exit code {p.exitcode})"))
                    spawn()
                continue
            if msg[0] == "exit":
                exited += 1
            elif msg[0] == "start":
                current[msg[1]] = key
            elif key in open_keys:
                if msg[0] == "end":
                    open_keys.discard(key)
                yield key, msg
        for key in sorted(open_keys, key=str):  # lost between a worker taking it and announcing it
            yield key, ("end", ("decode", "decoder process crashed"))
    finally:
        for p in procs.values():
            if p.is_alive():
                p.terminate()
        for p in procs.values():
            p.join(timeout=5)
        results.cancel_join_thread()
        tasks.cancel_join_thread()
