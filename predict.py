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

One input prints a readable result (a JSON list for --timeline); several
inputs or a folder print one JSON line per video, {"input": path, ...} with
"top_k" or "timeline", or "error" for a video that cannot be decoded (the
others are still classified; the exit status is then 1).
"""

import dataclasses
import json
import os
import sys
from typing import Any, Dict, List, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging
import numpy as np

from i3d import checkpoints
from i3d import config as config_lib
from i3d.data import sources as data_sources
from i3d.eval import classify
from i3d.eval import reports as eval_reports
from i3d.eval import runs as eval_runs
from i3d import fileio
from i3d import kinetics_weights
from i3d import labels
from i3d import model
from i3d import precision
from i3d.video import preprocess as video_preprocess

# DeepMind's Kinetics inputs: 224 x 224 centre crops of 256-pixel frames.
KINETICS_CROP_SIZE = 224

_NPY = flags.DEFINE_list(
    "npy", [], "Preprocessed clip(s) saved with np.save: (T,224,224,C) or "
    "(1,T,224,224,C) in [-1,1]; C=3 is RGB, C=2 flow (give both for joint). "
    "Larger frames (e.g. uncropped 256x340) are classified fully "
    "convolutionally, as the output notes.")
_GIF = flags.DEFINE_list(
    "gif", [], "Preprocessed clip(s) rendered as GIF of (x+1)/2, like "
    "DeepMind's samples; a name containing 'flow' is read as flow.")
_VIDEO = flags.DEFINE_list(
    "video", [], "Video file(s) or folder(s) to preprocess and classify.")
_CHECKPOINT = flags.DEFINE_list(
    "checkpoint", [], "DeepMind-layout checkpoint(s) (prefix, one of its "
    "files such as model.ckpt.index, or directory), one per stream; the "
    "stream is read from the checkpoint. Default: checkpoints/rgb_scratch, "
    "fetched if absent. With --checkpoint_dir: one checkpoint of that run "
    "(DIR/ckpt/ckpt-N, or one of its files), default its latest.")
_CHECKPOINT_DIR = flags.DEFINE_string(
    "checkpoint_dir", None, "A train.py train_dir: classify with the trained "
    "exercise model (its classes, streams, crop and preprocessing) instead "
    "of Kinetics.")
_LABELS = flags.DEFINE_string(
    "labels", "kinetics400", "Class names for --checkpoint: kinetics400, "
    "kinetics600 or a file with one name per line.")
_STREAM = config_lib.define_flags(
    config_lib.TrainConfig, ["stream"], defaults={"stream": None},
    note="Kinetics mode: the streams to run on --video input; default: "
    "those of the checkpoints.")["stream"]
_TOP_K = flags.DEFINE_integer("top_k", 5, "Number of classes to report.")
_MAX_FRAMES = flags.DEFINE_integer(
    "max_frames", 250, "Frames (at the model's frame rate: 25 fps for "
    "Kinetics) read from the start of a video, the paper's test protocol; 0 "
    "reads all. Over 250 frames are classified as consecutive 250-frame "
    "clips, logits averaged (bounded memory). --timeline covers the whole "
    "video unless this flag is given.")
_FLOW_ALGORITHM = config_lib.define_flags(
    config_lib.PreprocessConfig, ["flow_algorithm"],
    note="Kinetics mode only: exercise mode uses the run's.")[
        "flow_algorithm"]
_TIMELINE = flags.DEFINE_bool(
    "timeline", False, "Classify each --video in sliding windows: a JSON list "
    "of {start, end, label, probability}, times in seconds.")
_WINDOW_S = flags.DEFINE_float(
    "window_s", 2.0, "--timeline window length in seconds.")
_STRIDE_S = flags.DEFINE_float(
    "stride_s", 1.0, "--timeline seconds between window starts (at most "
    "--window_s).")
_ANNOTATED_VIDEO = flags.DEFINE_string(
    "annotated_video", None, "With one --video: write a copy of it (e.g. "
    "OUT.mp4) with the timeline's label and confidence drawn on every frame. "
    "Implies --timeline.")
_INFERENCE_BFLOAT16 = config_lib.define_flags(
    config_lib.TrainConfig, ["inference_bfloat16"],
    defaults={"inference_bfloat16": None},
    note="Default: the run's setting with --checkpoint_dir, else auto.")[
        "inference_bfloat16"]
_OUTPUT_JSON = flags.DEFINE_string(
    "output_json", None, "Write the result(s) as JSON to this file: the "
    "record (or timeline list) of one input, a list of records for several.")


def _kinetics_classifier(stream_filter: Sequence[str] | None
                         ) -> classify.Classifier:
  """Builds the Kinetics classifier from --checkpoint and --labels."""
  paths = _CHECKPOINT.value or [kinetics_weights.fetch_rgb_scratch()]
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
  return classify.Classifier.from_deepmind_checkpoints(
      stream_checkpoints, classes, precision.use_inference_bfloat16(
          _INFERENCE_BFLOAT16.value or "auto"))


def _exercise_classifier() -> Tuple[classify.Classifier,
                                    video_preprocess.PreprocessConfig, int]:
  """Loads the --checkpoint_dir run: classifier, preprocessing, crop size."""
  kinetics_only = [f"--{name}" for name in ("labels", "stream",
                                             "flow_algorithm")
                   if flags.FLAGS[name].present]
  if kinetics_only or len(_CHECKPOINT.value) > 1:
    raise app.UsageError(
        f"{', '.join(kinetics_only) or 'several --checkpoint'}: Kinetics mode "
        "only; with --checkpoint_dir the run gives the classes, streams and "
        "preprocessing (--checkpoint picks one of its checkpoints)")
  run = eval_runs.load_run(_CHECKPOINT_DIR.value,
                           _CHECKPOINT.value[0] if _CHECKPOINT.value else None,
                           inference_bfloat16=_INFERENCE_BFLOAT16.value)
  return run.classifier, run.preprocess, run.config.crop_size


def _classifier(stream_filter: Sequence[str] | None
                ) -> Tuple[classify.Classifier, video_preprocess.PreprocessConfig, int]:
  """The model of the mode asked for, its preprocessing and crop size."""
  if _CHECKPOINT_DIR.value:
    return _exercise_classifier()
  return (_kinetics_classifier(stream_filter),
          video_preprocess.PreprocessConfig(flow_algorithm=_FLOW_ALGORITHM.value),
          KINETICS_CROP_SIZE)


def _video_paths() -> Tuple[List[str], bool]:
  """The --video files (folders expanded) and whether this is a batch."""
  folders = [p for p in _VIDEO.value if os.path.isdir(p)]
  paths = classify.read_file_list(_VIDEO.value, data_sources.VIDEO_EXTENSIONS)
  for folder in folders:
    if not classify.read_file_list([folder], data_sources.VIDEO_EXTENSIONS):
      raise ValueError(
          f"{folder}: no video files ({', '.join(data_sources.VIDEO_EXTENSIONS)}) "
          "in this folder")
  return paths, bool(folders) or len(_VIDEO.value) > 1


def _classify_file(path: str, classifier: classify.Classifier,
                   preprocess: video_preprocess.PreprocessConfig, crop_size: int
                   ) -> Tuple[Dict[str, Any], np.ndarray | None]:
  """The JSON record of one video (its top-k or its timeline), joint logits."""
  if _TIMELINE.value or _ANNOTATED_VIDEO.value:
    # A timeline covers the whole video unless --max_frames is given.
    max_frames = _MAX_FRAMES.value if flags.FLAGS["max_frames"].present else 0
    entries = classify.classify_timeline(
        classifier, path,
        dataclasses.replace(preprocess, max_frames=max_frames or None),
        crop_size, _WINDOW_S.value, _STRIDE_S.value)
    if _ANNOTATED_VIDEO.value:
      eval_reports.write_annotated_video(path, entries, _ANNOTATED_VIDEO.value)
    return {"input": path, "timeline": entries}, None
  logits = classify.classify_video(
      classifier, path,
      dataclasses.replace(preprocess, max_frames=_MAX_FRAMES.value or None),
      crop_size)
  return {"input": path,
          **classify.prediction_json(logits["joint"], classifier.classes,
                                      _TOP_K.value)}, logits["joint"]


def _print_single(record: Dict[str, Any], classifier: classify.Classifier,
                  logits: np.ndarray | None) -> None:
  """Prints the result of a single input for a person to read.

  Kinetics mode prints DeepMind's format (from the joint `logits`).
  """
  if "timeline" in record:
    print("[\n" + ",\n".join(f"  {json.dumps(entry)}"
                              for entry in record["timeline"]) + "\n]")
  elif _CHECKPOINT_DIR.value:
    print(classify.format_prediction(record["input"], record["top_k"]))
  else:
    print(classify.format_deepmind(logits, classifier.classes, _TOP_K.value))


def _fully_convolutional_note(clips: Dict[str, np.ndarray],
                              crop_size: int) -> str | None:
  """Says how clips that are not crop_size x crop_size crops are classified."""
  height, width = next(iter(clips.values())).shape[1:3]
  if (height, width) == (crop_size, crop_size):
    return None
  rows, columns = model.InceptionI3d.logits_positions(height, width)
  return (f"{','.join(_NPY.value + _GIF.value)}: {height}x{width} frames, not "
          f"the model's {crop_size}x{crop_size} crops: classified fully "
          f"convolutionally, logits averaged over {rows}x{columns} spatial "
          "position(s)")


def _clip_inputs() -> Dict[str, np.ndarray]:
  """Reads --npy and --gif clips into {stream: clip}."""
  clips = {}
  sources = [(p, classify.load_npy_clip(p)) for p in _NPY.value]
  sources += [(p, classify.load_gif_clip(p, 2 if "flow" in p else 3))
              for p in _GIF.value]
  for path, clip in sources:
    stream = classify.stream_of_clip(clip)
    if stream in clips:
      raise ValueError(f"{path}: a second {stream} clip; give one per stream")
    if clips and clip.shape[1:3] != next(iter(clips.values())).shape[1:3]:
      raise ValueError(
          f"{path}: {clip.shape[1]}x{clip.shape[2]} frames, but the other "
          "stream's clip has "
          f"{'x'.join(map(str, next(iter(clips.values())).shape[1:3]))}; give "
          "both streams at the same size")
    clips[stream] = clip
  return clips


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not (_NPY.value or _GIF.value or _VIDEO.value):
    raise app.UsageError("Give --npy, --gif or --video")
  if _ANNOTATED_VIDEO.value and (len(_VIDEO.value) != 1 or
                                 os.path.isdir(_VIDEO.value[0])):
    raise app.UsageError("--annotated_video needs exactly one --video file")
  if (_TIMELINE.value or _ANNOTATED_VIDEO.value) and (_NPY.value or
                                                      _GIF.value):
    raise app.UsageError("--timeline classifies --video files, not clips")
  stream_filter = None
  if _STREAM.value:
    stream_filter = ("rgb", "flow") if _STREAM.value == "joint" else (
        _STREAM.value,)
  results = []
  try:
    classifier, preprocess, crop_size = _classifier(stream_filter)
    video_paths, batch = _video_paths()
    clips = _clip_inputs()
    batch = batch or bool(clips and video_paths)
    if clips:
      missing = [s for s in classifier.streams if s not in clips]
      if missing:
        raise ValueError(f"No clip for stream(s) {missing}")
      logits = classifier.logits(
          {s: clips[s][None] for s in classifier.streams})["joint"][0]
      record = {"input": ",".join(_NPY.value + _GIF.value),
                **classify.prediction_json(logits, classifier.classes,
                                            _TOP_K.value)}
      note = _fully_convolutional_note(clips, crop_size)
      if note:
        record["note"] = note
      results.append(record)
      if batch:
        print(json.dumps(record), flush=True)
      else:
        if note:
          print(f"Note: {note}\n")
        _print_single(record, classifier, logits)
    for path in video_paths:
      try:
        record, logits = _classify_file(path, classifier, preprocess,
                                        crop_size)
      except (ValueError, OSError) as e:
        if not batch:
          raise
        logging.error("%s", e)
        record = {"input": path, "error": str(e)}
      results.append(record)
      if batch:
        print(json.dumps(record), flush=True)
      else:
        _print_single(record, classifier, logits)
  except (ValueError, OSError) as e:
    sys.exit(f"error: {e}")
  if _OUTPUT_JSON.value:
    output = results if batch else results[0]
    if not batch and "timeline" in output:
      output = output["timeline"]
    fileio.write_json(_OUTPUT_JSON.value, output)
  failed = [r["input"] for r in results if "error" in r]
  if failed:
    sys.exit(f"error: {len(failed)} of {len(results)} videos could not be "
             f"classified: {', '.join(failed)}")


if __name__ == "__main__":
  app.run(main)
