r"""Classifies clips or videos with a Kinetics I3D or a trained exercise model.

Kinetics mode, as DeepMind's evaluate_sample.py (the rgb_scratch weights are
fetched into checkpoints/ if absent):
  python predict.py --npy=v_CricketShot_g04_c01_rgb.npy
  python predict.py --gif=../shared/.../v_CricketShot_g04_c01_rgb.gif
  python predict.py --video=clip.mp4 --checkpoint=checkpoints/rgb_scratch

Exercise mode, with a model trained by train.py:
  python predict.py --video=my_squat.mp4 --checkpoint_dir=runs/demo
  python predict.py --video=workout.mp4 --checkpoint_dir=runs/demo \
      --timeline --annotated_video=annotated.mp4
  python predict.py --video=videos/ --checkpoint_dir=runs/demo  # JSON lines
"""

import json
import sys
from typing import Dict, List, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

from i3d import checkpoints
from i3d import fileio
from i3d import inference
from i3d import labels

_NPY = flags.DEFINE_list(
    "npy", [], "Preprocessed clip(s) saved with np.save: (T,224,224,C) or "
    "(1,T,224,224,C) in [-1,1]; C=3 is RGB, C=2 flow (give both for joint).")
_GIF = flags.DEFINE_list(
    "gif", [], "Preprocessed clip(s) rendered as GIF of (x+1)/2, like "
    "DeepMind's samples; a name containing 'flow' is read as flow.")
_VIDEO = flags.DEFINE_list(
    "video", [], "Video file(s) or folder(s) to preprocess and classify.")
_CHECKPOINT = flags.DEFINE_list(
    "checkpoint", [], "DeepMind-layout checkpoint(s) (prefix or directory), "
    "one per stream; the stream is read from the checkpoint. Default: "
    "checkpoints/rgb_scratch, fetched if absent.")
_CHECKPOINT_DIR = flags.DEFINE_string(
    "checkpoint_dir", None, "A train.py train_dir: classify with the trained "
    "exercise model instead of Kinetics.")
_LABELS = flags.DEFINE_string(
    "labels", "kinetics400", "Class names for --checkpoint: kinetics400, "
    "kinetics600 or a file with one name per line.")
_STREAM = flags.DEFINE_enum(
    "stream", None, ["rgb", "flow", "joint"],
    "Streams to run on --video input; default: those of the checkpoints.")
_TOP_K = flags.DEFINE_integer("top_k", 5, "Number of classes to report.")
_MAX_FRAMES = flags.DEFINE_integer(
    "max_frames", 250, "Frames (at 25 fps) read from the start of a video, "
    "the paper's test protocol; 0 reads all.")
_FLOW_ALGORITHM = flags.DEFINE_string(
    "flow_algorithm", "tvl1", "Optical flow for --video in Kinetics mode "
    "(the Kinetics flow weights expect tvl1).")
_OUTPUT_JSON = flags.DEFINE_string(
    "output_json", None, "Write the result(s) as JSON to this file.")


def _kinetics_classifier(stream_filter: Sequence[str] | None
                         ) -> inference.Classifier:
  """Builds the Kinetics classifier from --checkpoint and --labels."""
  paths = _CHECKPOINT.value or [checkpoints.fetch_rgb_scratch()]
  stream_checkpoints = {}
  for path in paths:
    stream = checkpoints.checkpoint_stream(path)
    if stream in stream_checkpoints:
      raise ValueError(f"Two {stream} checkpoints given: "
                       f"{stream_checkpoints[stream]} and {path}")
    stream_checkpoints[stream] = path
  if stream_filter:
    missing = [s for s in stream_filter if s not in stream_checkpoints]
    if missing:
      raise ValueError(f"--stream needs a {'/'.join(missing)} checkpoint; "
                       f"--checkpoint gives {sorted(stream_checkpoints)}")
    stream_checkpoints = {s: stream_checkpoints[s] for s in stream_filter}
  classes = labels.resolve_classes(_LABELS.value)
  return inference.Classifier.from_deepmind_checkpoints(stream_checkpoints,
                                                        classes)


def _clip_inputs() -> Dict[str, np.ndarray]:
  """Reads --npy and --gif clips into {stream: clip}."""
  clips = {}
  sources = [(p, inference.load_npy_clip(p)) for p in _NPY.value]
  sources += [(p, inference.load_gif_clip(p, 2 if "flow" in p else 3))
              for p in _GIF.value]
  for path, clip in sources:
    stream = inference.stream_of_clip(clip)
    if stream in clips:
      raise ValueError(f"{path}: a second {stream} clip; give one per stream")
    clips[stream] = clip
  return clips


def _print_and_collect(name: str, logits: np.ndarray, classes: Sequence[str],
                       results: List[Dict[str, object]]) -> None:
  print(inference.format_deepmind(logits, classes, _TOP_K.value))
  record = inference.prediction_json(logits, classes, _TOP_K.value)
  results.append({"input": name, **record})


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not (_NPY.value or _GIF.value or _VIDEO.value):
    raise app.UsageError("Give --npy, --gif or --video")
  stream_filter = None
  if _STREAM.value:
    stream_filter = ("rgb", "flow") if _STREAM.value == "joint" else (
        _STREAM.value,)
  try:
    classifier = _kinetics_classifier(stream_filter)
    results = []
    clips = _clip_inputs()
    if clips:
      missing = [s for s in classifier.streams if s not in clips]
      if missing:
        raise ValueError(f"No clip for stream(s) {missing}")
      logits = classifier.logits({s: clips[s][None] for s in classifier.streams})
      _print_and_collect(",".join(_NPY.value + _GIF.value), logits["joint"][0],
                         classifier.classes, results)
    for path in inference.read_file_list(_VIDEO.value):
      raise ValueError(f"{path}: --video is not supported yet")
  except (ValueError, OSError) as e:
    logging.error("%s", e)
    sys.exit(f"error: {e}")
  if _OUTPUT_JSON.value:
    fileio.write_json(_OUTPUT_JSON.value,
                      results[0] if len(results) == 1 else results)


if __name__ == "__main__":
  app.run(main)
