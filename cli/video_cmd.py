"""Video commands: ``clipdex index videos SRC... --index DIR`` and the video options of ``clipdex search``.

``index_videos_cmd`` is registered in the ``index`` group (``cli.main``); ``video_search_options`` decorates
``clipdex search`` and ``run_video_search`` answers ``--table videos``.
"""
from __future__ import annotations

import click

from cli.indexing import engine_options, indexing_options, run_indexer
from indexers.video_decode import SamplingPlan, import_av
from indexers.videos import VideoIndexOptions, index_videos
from retrieval.errors import InvalidInput
from retrieval.index.opening import open_for_writing
from retrieval.io.sources import VIDEO_EXTENSIONS, discover
from retrieval.query.video import VideoSearchOptions, search_frames, search_videos


def _summary_line(s: dict) -> str:
    parts = [f"added {s['added']}", f"updated {s['updated']}", f"unchanged {s['unchanged']}", f"removed {s['removed']}",
             f"errors {s['errors']}" + (f" ({s['partial']} partial)" if s["partial"] else "")
             + (f" (+{s['known_errors']} known)" if s["known_errors"] else "")]
    return ", ".join(parts) + f"; {s['frames']} frames in {s['elapsed']:.1f}s ({s['frames_per_s']:.1f} frames/s)"


@click.command("videos")
@indexing_options(workers=True)
@click.option("--fps", type=float, default=None, help="Frames sampled per second (default 1).")
@click.option("--frames", "n_frames", type=int, default=None, help="Sample N frames: the middle of N equal chunks.")
@click.option("--keyframes", is_flag=True, help="Sample every keyframe (decodes keyframes only: fastest).")
@engine_options
def index_videos_cmd(sources, index_path, model, backend, batch_size, workers, exclude, prune, retry_errors, device,
                     as_json, fps, n_frames, keyframes, engine, ray_address, actors, gpus_per_actor):
    """Index video files (mp4, mov, mkv, webm, avi, m4v) or manifests with a path column: sampled frames with
    their times go to the `frames` table, one mean-pooled vector per video to `videos`."""
    plan = SamplingPlan.from_options(fps, n_frames, keyframes)  # bad options fail before the index is touched
    import_av()
    found = discover(sources, VIDEO_EXTENSIONS, exclude)
    ix = open_for_writing(index_path, model, backend, device=device)
    opts = VideoIndexOptions(sampling=plan, batch_size=batch_size, workers=workers, prune=prune,
                             retry_errors=retry_errors)
    if engine == "ray":
        from indexers.ray_engine import RayOptions  # deferred: Ray is an optional extra
        from indexers.ray_videos import index_videos_ray  # deferred: Ray is an optional extra

        ropts = RayOptions(address=ray_address, actors=actors, gpus_per_actor=gpus_per_actor)
        run_indexer(ix, "video", lambda progress: index_videos_ray(ix, found, opts, ropts, progress).as_dict(),
                    as_json, _summary_line)
        return
    run_indexer(ix, "video", lambda progress: index_videos(ix, found, opts, progress).as_dict(), as_json,
                _summary_line)


_VIDEO_OPTIONS = [
    click.option("--pool", type=click.Choice(["max", "mean", "query-scoring"]), default=None,
                 help="--table videos: frame aggregation for the pooled score (default max)."),
    click.option("--tau", type=float, default=None, help="--table videos: query-scoring temperature (default 0.1)."),
    click.option("--alpha", type=float, default=None,
                 help="--table videos: CLIPRerank weight of the pooled score vs the best frame (default 0.4)."),
    click.option("--candidates", type=int, default=None,
                 help="--table videos: videos shortlisted from video vectors and from frames (default 100)."),
    click.option("--segments", is_flag=True, default=None,
                 help="--table videos: add (start, end) segments of matching frames."),
    click.option("--threshold", type=float, default=None,
                 help="--table videos: segment score threshold (default: best frame score - 0.05)."),
]


def video_search_options(fn):
    """Add the video options to a search command (they arrive as keyword arguments)."""
    for opt in reversed(_VIDEO_OPTIONS):
        fn = opt(fn)
    return fn


def run_video_search(ix, text, image, k, where, min_score, encoder, table, long_text, video: dict):
    """Answer ``clipdex search`` for the ``videos`` and ``frames`` tables."""
    given = {name: v for name, v in video.items() if v is not None and v is not False}
    if table != "videos":
        if given:
            raise InvalidInput(f"--{next(iter(given)).replace('_', '-')} applies to --table videos only")
        return search_frames(ix, text, image=image, k=k, where=where, min_score=min_score, long_text=long_text,
                             encoder=encoder)
    if "threshold" in given and not video.get("segments"):
        raise InvalidInput("--threshold applies to --segments")
    opts = VideoSearchOptions(**{k2: v for k2, v in given.items()})
    return search_videos(ix, text, image=image, k=k, where=where, options=opts, long_text=long_text, encoder=encoder,
                         min_score=min_score)
