r"""Preprocesses a folder or manifest of videos into a cache for training.

  python prepare_data.py --data_dir=videos/ --cache_dir=cache/
  python prepare_data.py --manifest=videos.csv --cache_dir=cache/ \
      --streams=rgb,flow --flow_algorithm=tvl1 --num_workers=8

The logic lives in `i3d.data.cache.prepare_dataset`; the exit status is 0 when
every video was prepared, 1 when some failed (listed in the summary), and 2 when
the dataset could not be read as given.
"""

import os
from typing import Sequence

from absl import app
from absl import flags
from absl import logging

from i3d import streams as streams_lib
from i3d.video import flow
from i3d.video import preprocess as video_preprocess

_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Folder with one sub-folder of videos per class.")
_MANIFEST = flags.DEFINE_string(
    "manifest", None,
    "CSV with a header and columns path,label[,subject][,split]; paths are "
    "relative to the CSV's folder.")
_CACHE_DIR = flags.DEFINE_string(
    "cache_dir", None, "Where the prepared dataset is written.")
_CLASSES = flags.DEFINE_string(
    "classes", None,
    "Class list: 'exercise' (default), a class file, or comma-separated names.")
_STREAMS = flags.DEFINE_list(
    "streams", list(streams_lib.STREAMS), "Streams to prepare: rgb, flow or both.")
_FLOW_ALGORITHM = flags.DEFINE_enum(
    "flow_algorithm", "tvl1", flow.FLOW_ALGORITHMS,
    "Optical flow: tvl1 (what the Kinetics flow weights expect) or dis "
    "(about 100x faster, different statistics).")
_FPS = flags.DEFINE_float("fps", 25.0, "Frame rate videos are resampled to.")
_SHORT_SIDE = flags.DEFINE_integer(
    "short_side", 256, "Shorter side of the stored frames, in pixels.")
_MAX_FRAMES = flags.DEFINE_integer(
    "max_frames", None, "Keep at most this many frames of each video.")
_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers", os.cpu_count() or 1, "Videos prepared in parallel.")
_EVAL_FRACTION = flags.DEFINE_float(
    "eval_fraction", 0.2, "Fraction of the videos in the eval split.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the train/eval split.")

flags.mark_flags_as_mutual_exclusive(["data_dir", "manifest"], required=True)
flags.mark_flag_as_required("cache_dir")


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  # Imported here, not at the top: worker processes are spawned and re-import
  # this script, and should not each spend seconds importing TensorFlow.
  from i3d.data import cache as data_cache  # pylint: disable=g-import-not-at-top
  try:
    config = video_preprocess.PreprocessConfig(
        fps=_FPS.value,
        short_side=_SHORT_SIDE.value,
        flow_algorithm=_FLOW_ALGORITHM.value,
        max_frames=_MAX_FRAMES.value)
    report = data_cache.prepare_dataset(
        cache_dir=_CACHE_DIR.value,
        data_dir=_DATA_DIR.value,
        manifest=_MANIFEST.value,
        classes=_CLASSES.value,
        streams=_STREAMS.value,
        config=config,
        num_workers=_NUM_WORKERS.value,
        eval_fraction=_EVAL_FRACTION.value,
        seed=_SEED.value)
  except ValueError as e:
    # Configuration problems (bad manifest, unknown label, bad settings) are
    # reported as one clear line, not a traceback.
    logging.error("%s", e)
    return 2
  # prepare_dataset has logged the summary, failures included.
  return 0 if report.ok else 1


if __name__ == "__main__":
  app.run(main)
