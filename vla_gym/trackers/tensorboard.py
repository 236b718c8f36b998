"""``tracker=tensorboard``: a finished run as TensorBoard event files, written with TensorBoard's own writer.

Scalars: ``episode/*`` at step = the episode's position in the run, run-level numbers
(``overall/*``, ``task/<suite>/<task>/*``, ``suite/<suite>/*``, ``policy/*``) at step 0; the
resolved config as a text summary (``config``); each episode video as an animated GIF image
summary (``video/<task>/ep<NNN>_<outcome>``, what TensorBoard's video summaries are), subsampled
to ``video_max_frames`` and scaled by ``video_scale``. No TensorFlow or torch needed.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from vla_gym.trackers.summary import RunSummary, episode_scalars, get_key


def _gif(path: Path, max_frames: int, scale: float) -> tuple[bytes, int, int, int]:
    """(GIF bytes, height, width, frames) of an mp4, every k-th frame, downscaled."""
    import imageio.v3 as iio
    from PIL import Image

    frames = iio.imread(path)
    meta_fps = 20.0
    try:
        meta_fps = float(iio.immeta(path).get("fps") or 20.0)
    except Exception:  # noqa: BLE001 - fps only sets the GIF's frame duration
        pass
    stride = max(1, int(np.ceil(len(frames) / max(1, max_frames))))
    frames = frames[::stride]
    h, w = frames.shape[1:3]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    images = [Image.fromarray(f).resize(size, Image.BILINEAR) if size != (w, h) else Image.fromarray(f)
              for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=max(20, round(1000 * stride / meta_fps)))
    return buf.getvalue(), size[1], size[0], len(images)


class TensorBoardTracker:
    """Writes a :class:`~vla_gym.trackers.RunSummary` as event files (see the module docstring)."""

    def __init__(self, cfg: Any = None) -> None:
        """``cfg``: the ``tracker`` config node (``log_dir``, ``log_videos``, ``video_max_frames``, ``video_scale``)."""
        self.cfg = cfg

    def log_dir(self, summary: RunSummary) -> Path:
        """Where the event files go: ``tracker.log_dir``, else ``<run dir>/tensorboard``."""
        return Path(get_key(self.cfg, "log_dir") or summary.run_dir / "tensorboard")

    def log_run(self, summary: RunSummary) -> None:
        """Write scalars, the config text and the videos; the writer is flushed and closed."""
        from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        log_dir = self.log_dir(summary)
        log_dir.mkdir(parents=True, exist_ok=True)
        writer = EventFileWriter(str(log_dir))
        now = time.time()

        def emit(step: int, *values: Any) -> None:
            writer.add_event(event_pb2.Event(wall_time=now, step=step, summary=summary_pb2.Summary(value=list(values))))

        def scalar(tag: str, value: float) -> Any:
            return summary_pb2.Summary.Value(tag=tag, simple_value=float(value))

        try:
            for i, ep in enumerate(summary.episodes):
                emit(i, *(scalar(k, v) for k, v in episode_scalars(ep).items()))
            emit(0, *(scalar(k, v) for k, v in summary.scalars.items()))
            text = "```\n" + json.dumps(summary.config, indent=2, default=str) + "\n```"
            meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))
            tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[text.encode()],
                                            tensor_shape=tensor_shape_pb2.TensorShapeProto())
            emit(0, summary_pb2.Summary.Value(tag="config", metadata=meta, tensor=tensor))
            if get_key(self.cfg, "log_videos") is not False:
                max_frames = int(get_key(self.cfg, "video_max_frames") or 100)
                scale = float(get_key(self.cfg, "video_scale") or 1.0)
                for ep, path in summary.videos():
                    gif, h, w, _ = _gif(path, max_frames, scale)
                    tag = f"video/{ep['task']}/{Path(ep['video']).stem}"
                    image = summary_pb2.Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=gif)
                    emit(int(ep["episode_index"]), summary_pb2.Summary.Value(tag=tag, image=image))
        finally:
            writer.close()
