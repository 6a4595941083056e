"""Every setting, documented once: the flags, config.json and validation.

A setting is a dataclass field declared with `setting(default, doc, ...)`:
its type (the annotation), default, range or choices and one-line doc live
there and nowhere else. From them:

* `define_flags(config_class, names)` declares a script's absl flags (type,
  default, help, enum choices) with a validator, so a bad value fails when the
  flags are parsed, before any work starts;
* `from_flags(config_class)` builds the dataclass from the parsed flags;
* `check_settings(config)` (run by each dataclass's `__post_init__`) applies
  the same ranges to values built in code or read from `config.json`.

The dataclasses, in the order a run uses them (cf. TF Model Garden's
`official/vision/configs`):

* `PrepareConfig`: which videos go into a prepared cache and how it is split
  (prepare_data.py, train.py --prepare, evaluate.py on new videos).
* `PreprocessConfig`: how a video becomes frames (frame rate, short side,
  optical flow); part of the cache key.
* `TrainConfig`: a training run; saved as `train_dir/config.json`, with the
  `PreprocessConfig` of its training data, so that the run's model is always
  fed the way it was trained (`TrainConfig.preprocessing`).

Options of one command (predict.py's inputs and outputs, train.py's
--prepare) stay plain absl flags in that script.

To add a setting: add one field `name: type = setting(default, "doc", ...)`
to the dataclass it belongs to, then name it in the `define_flags` call of
the scripts that take it; the flag, its validation and config.json follow.

This module imports no TensorFlow.
"""

import dataclasses
import hashlib
import json
import os
import typing
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Type, TypeVar

from absl import flags

from i3d import fileio
from i3d import streams as streams_lib
from i3d.video import flow

# The flags `define_flags` declares belong to the script that asks for them
# (its --helpshort lists them), not to this module.
flags.disclaim_key_flags()

CONFIG_FILE = "config.json"

# --trainable: which endpoints train. The value names the last frozen
# endpoint; everything after it trains.
TRAINABLE_BOUNDARIES: Dict[str, Optional[str]] = {
    "logits": "Mixed_5c",
    "mixed_5": "MaxPool3d_5a_2x2",
    "mixed_4": "MaxPool3d_4a_3x3",
    "all": None,
}

# Values of `TrainConfig.inference_bfloat16`: "auto" uses bfloat16 where the
# CPU computes it natively (see `i3d.precision`), "on" asks for it anyway,
# "off" keeps float32.
INFERENCE_BFLOAT16_SETTINGS = ("auto", "on", "off")

# Bump when a change to the decoding or resampling changes the frames produced,
# so that prepared caches keyed by `PreprocessConfig.fingerprint` are rebuilt.
# Version 2: frame times repaired where timestamps repeat or jump back.
PREPROCESSING_VERSION = 2

# The model's input values: RGB x / 255 * 2 - 1, flow clipped to
# ±flow.FLOW_BOUND_PX and divided by it.
MODEL_VALUE_RANGE = (-1.0, 1.0)

_Config = TypeVar("_Config")


def setting(default: Any, doc: str, *,
            choices: Optional[Sequence[Any]] = None,
            min: Optional[float] = None,  # pylint: disable=redefined-builtin
            max: Optional[float] = None,  # pylint: disable=redefined-builtin
            flag: bool = True) -> Any:
  """Declares a setting: a dataclass field with its doc, choices and range.

  Args:
    default: the default value (None for "unset" of an Optional setting).
    doc: one line for a person: what it does, units, the paper's value.
    choices: the allowed values, if a closed set.
    min: the smallest allowed value (inclusive), for numbers.
    max: the largest allowed value (inclusive), for numbers.
    flag: False for settings no script takes as a flag (derived values).

  Returns:
    A `dataclasses.field`.
  """
  return dataclasses.field(default=default, metadata={
      "doc": doc, "choices": None if choices is None else tuple(choices),
      "min": min, "max": max, "flag": flag})


def _settings(config_class: type) -> Dict[str, dataclasses.Field]:
  return {f.name: f for f in dataclasses.fields(config_class)
          if "doc" in f.metadata}


def _base_type(config_class: type, name: str) -> type:
  """The type of a setting, Optional removed (int for Optional[int])."""
  hint = typing.get_type_hints(config_class)[name]
  args = [a for a in typing.get_args(hint) if a is not type(None)]
  if typing.get_origin(hint) is typing.Union and len(args) == 1:
    return args[0]
  return typing.get_origin(hint) or hint


def check_setting(config_class: type, name: str, value: Any) -> None:
  """Checks one value against its setting's choices and range.

  None passes (an unset Optional setting, or a flag whose default is "the
  run's").

  Raises:
    ValueError: naming the setting, the value and what is allowed.
  """
  if value is None:
    return
  metadata = _settings(config_class)[name].metadata
  choices, low, high = metadata["choices"], metadata["min"], metadata["max"]
  if choices is not None and value not in choices:
    raise ValueError(f"{name} must be one of "
                     f"{', '.join(str(c) for c in choices)}, got {value!r}")
  if low is not None and value < low:
    raise ValueError(f"{name} must be at least {low}, got {value!r}")
  if high is not None and value > high:
    raise ValueError(f"{name} must be at most {high}, got {value!r}")


def check_settings(config: Any) -> None:
  """Checks every setting of a config dataclass (see `check_setting`)."""
  for name in _settings(type(config)):
    check_setting(type(config), name, getattr(config, name))


def _range_text(metadata: Mapping[str, Any]) -> str:
  low, high = metadata["min"], metadata["max"]
  if low is not None and high is not None:
    return f" In [{low}, {high}]."
  if low is not None:
    return f" At least {low}."
  if high is not None:
    return f" At most {high}."
  return ""


def define_flags(config_class: type,
                 names: Optional[Sequence[str]] = None,
                 defaults: Optional[Mapping[str, Any]] = None,
                 docs: Optional[Mapping[str, str]] = None,
                 note: str = "",
                 flag_values: flags.FlagValues = flags.FLAGS
                 ) -> Dict[str, flags.FlagHolder]:
  """Declares absl flags for settings of a config dataclass.

  Each flag has the setting's name, type, default and doc; a closed set of
  strings is an enum flag; other choices and ranges are checked by a
  validator when the flags are parsed.

  Args:
    config_class: `PrepareConfig`, `PreprocessConfig` or `TrainConfig`.
    names: the settings to declare; default all those with `flag=True`.
    defaults: other defaults for this script, e.g. None for "the run's".
    docs: other help for this script, where the setting means more there.
    note: a sentence added to the help of each flag, e.g. "Default: the
      run's setting.".
    flag_values: where to declare them.

  Returns:
    {name: FlagHolder}.
  """
  fields = _settings(config_class)
  names = [n for n, f in fields.items() if f.metadata["flag"]] if (
      names is None) else list(names)
  defaults, docs = dict(defaults or {}), dict(docs or {})
  holders = {}
  for name in names:
    metadata = fields[name].metadata
    default = defaults.get(name, fields[name].default)
    doc = docs.get(name, metadata["doc"]) + (f" {note}" if note else "")
    kind = _base_type(config_class, name)
    choices = metadata["choices"]
    if kind is bool:
      holder = flags.DEFINE_bool(name, default, doc, flag_values=flag_values)
    elif kind is str and choices is not None:
      holder = flags.DEFINE_enum(name, default, list(choices), doc,
                                 flag_values=flag_values)
    else:
      define = {str: flags.DEFINE_string, int: flags.DEFINE_integer,
                float: flags.DEFINE_float}[kind]
      if choices is not None:
        doc += f" One of {', '.join(str(c) for c in choices)}."
      holder = define(name, default, doc + _range_text(metadata),
                      flag_values=flag_values)

    def validate(value, name=name):
      try:
        check_setting(config_class, name, value)
      except ValueError as e:
        raise flags.ValidationError(str(e)) from e
      return True

    flags.register_validator(name, validate, flag_values=flag_values)
    holders[name] = holder
  return holders


def from_flags(config_class: Type[_Config],
               flag_values: flags.FlagValues = flags.FLAGS,
               **values: Any) -> _Config:
  """Builds a config from the parsed flags of its settings (and `values`).

  Settings without a flag in `flag_values` keep their default unless given
  in `values`.

  Raises:
    ValueError: if a value is out of range (see `check_settings`).
  """
  from_parsed = {name: flag_values[name].value
                 for name, field in _settings(config_class).items()
                 if field.metadata["flag"] and name in flag_values}
  return config_class(**{**from_parsed, **values})


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
  """Which videos go into a prepared cache, and its train/eval split."""
  data_dir: Optional[str] = setting(
      None, "Videos in one sub-folder per class.")
  manifest: Optional[str] = setting(
      None, "CSV with a header and columns path,label[,subject][,split]; "
      "paths are relative to the CSV's folder.")
  classes: Optional[str] = setting(
      None, "Class list: 'exercise' (default), a class file, or "
      "comma-separated names.")
  eval_fraction: float = setting(
      0.2, "Fraction of the subjects (or videos, without subjects) held out "
      "for evaluation.", min=0.0, max=1.0)
  prepare_workers: int = setting(
      os.cpu_count() or 1, "Processes preparing videos (decoding, flow, "
      "JPEG) in parallel.", min=1)

  def __post_init__(self) -> None:
    check_settings(self)


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
  """Settings that determine the frames and flow computed from a video.

  Part of the prepared cache's key (`fingerprint`) and saved with every
  training run (`TrainConfig.preprocess`).
  """
  fps: float = setting(
      25.0, "Frame rate videos are resampled to, in frames per second "
      "(DeepMind: 25).", min=1e-3)
  short_side: int = setting(
      256, "Frames are resized so the shorter side has this many pixels "
      "(DeepMind: 256).", min=2)
  flow_algorithm: str = setting(
      "tvl1", "Optical flow: tvl1 (what the Kinetics flow weights expect) or "
      "dis (about 100x faster, different statistics).",
      choices=flow.FLOW_ALGORITHMS)
  max_frames: Optional[int] = setting(
      None, "Keep at most this many frames from the start of each video "
      "(after resampling); unset keeps the whole video.", min=1)

  def __post_init__(self) -> None:
    check_settings(self)

  def to_dict(self) -> Dict[str, Any]:
    """Returns the settings as a JSON-serialisable dict."""
    return dataclasses.asdict(self)

  def fingerprint(self) -> str:
    """Returns a short stable hash of the settings and preprocessing version.

    Two configs with equal fields give the same fingerprint in every process
    and Python version, so it can key cached results.
    """
    settings = {**self.to_dict(), "version": PREPROCESSING_VERSION}
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclasses.dataclass
class TrainConfig:
  """Everything a training run needs; saved as `train_dir/config.json`."""
  cache_dir: Optional[str] = setting(
      None, "The prepared dataset (made by prepare_data.py, or by train.py "
      "with --prepare).")
  train_dir: str = setting(
      "runs/default", "Checkpoints, summaries, exports and metrics of the "
      "run.")
  classes: Tuple[str, ...] = setting(
      (), "Class names in logit order (from the cache).", flag=False)
  preprocess: Optional[PreprocessConfig] = setting(
      None, "How the training videos were preprocessed (from the cache); "
      "inference uses the same.", flag=False)
  training_data: str = setting(
      "", "Fingerprint of the training split's videos and labels (from the "
      "cache): a run does not resume on other data.", flag=False)
  stream: str = setting("joint", "Streams: rgb, flow or joint (both, logits "
                        "summed).", choices=("rgb", "flow", streams_lib.JOINT))
  num_frames: int = setting(64, "Frames per training clip (paper: 64).",
                            min=1)
  crop_size: int = setting(224, "Square crop side in pixels (paper: 224).",
                           min=1)
  batch_size: int = setting(8, "Global batch size.", min=1)
  trainable: str = setting(
      "logits", "What trains: logits only, the Mixed_5 blocks and logits, "
      "Mixed_4 onwards, or all.", choices=tuple(TRAINABLE_BOUNDARIES))
  batch_norm_training: bool = setting(
      False, "Batch norm of the trainable blocks uses and updates batch "
      "statistics; leave off for small batches.")
  learning_rate: float = setting(0.1, "Peak learning rate.", min=0.0)
  lr_schedule: str = setting("cosine", "Learning-rate schedule after "
                             "warm-up.", choices=("cosine", "constant"))
  warmup_steps: int = setting(0, "Steps of linear learning-rate warm-up.",
                              min=0)
  momentum: float = setting(0.9, "SGD momentum (paper: 0.9).", min=0.0,
                            max=1.0)
  weight_decay: float = setting(1e-7, "L2 on kernels (paper: 1e-7).",
                                min=0.0)
  dropout_keep_prob: float = setting(
      0.5, "Keep probability before the logits (paper: 0.5).", min=0.0,
      max=1.0)
  label_smoothing: float = setting(0.0, "Label smoothing of the loss.",
                                   min=0.0, max=1.0)
  per_stream_loss_weight: float = setting(
      0.0, "Adds this times each stream's own loss to the joint loss.",
      min=0.0)
  num_steps: int = setting(1000, "Training steps.", min=1)
  num_epochs: Optional[float] = setting(
      None, "If set, overrides num_steps: epochs over the training videos "
      "(one clip per video per epoch).", min=0.0)
  eval_every: int = setting(500, "Steps between evaluations.", min=1)
  checkpoint_every: int = setting(200, "Steps between saves.", min=1)
  keep_checkpoints: int = setting(3, "Checkpoints kept.", min=1)
  log_every: int = setting(20, "Steps between log lines and summaries.",
                           min=1)
  seed: int = setting(0, "Seed of the data order, augmentation and splits.")
  rgb_checkpoint: Optional[str] = setting(
      None, "DeepMind-layout RGB checkpoint (prefix, one of its files or "
      "directory); default checkpoints/rgb_scratch (fetched if absent).")
  flow_checkpoint: Optional[str] = setting(
      None, "DeepMind-layout flow checkpoint (e.g. flow_imagenet; prefix, one "
      "of its files or directory); default: cross-modality init from the RGB "
      "weights.")
  flow_batch_norm_batches: int = setting(
      10, "Without --flow_checkpoint, the cross-modality initialised flow "
      "stream re-estimates its batch-norm statistics before training on the "
      "flow clips of this many training batches (--batch_size clips each, "
      "run in batches of at least 16; 0 keeps the RGB checkpoint's, which do not "
      "describe flow activations: see i3d.train.batch_norm).", min=0)
  init_from: Optional[str] = setting(
      None, "A previous run's train_dir to start from (e.g. runs/demo) "
      "instead of the Kinetics weights: all its weights, its logits too when "
      "its classes are the same (names and order).")
  feature_cache: bool = setting(
      True, "With a frozen backbone part, compute its outputs once for "
      "feature_views views per video and train on them.")
  feature_views: int = setting(
      8, "Augmented views per training video in the feature cache.", min=1)
  eval_num_frames: Optional[int] = setting(
      None, "Frames per evaluation clip; 0 (or None) for the whole video "
      "(DeepMind's test protocol).", min=0)
  eval_num_clips: int = setting(
      1, "Evenly spaced evaluation clips per video, logits averaged.", min=1)
  eval_num_crops: int = setting(
      1, "Spatial crops per evaluation clip: 1 (centre) or 3 (start, centre "
      "and end of the longer side).", choices=(1, 3))
  strategy: str = setting(
      "default", "tf.distribute strategy: one device, all local devices, or "
      "the workers of TF_CONFIG.",
      choices=("default", "mirrored", "multi_worker"))
  mixed_precision: bool = setting(
      False, "float16 compute on GPU (graph rewrite) with a static loss "
      "scale.")
  inference_bfloat16: str = setting(
      "auto", "bfloat16 for the frozen backbone's features, evaluation and "
      "prediction, never for training steps: auto uses it where the CPU has "
      "AVX512-BF16 or AMX (1.6-1.8x faster, logits within 1-3%).",
      choices=INFERENCE_BFLOAT16_SETTINGS)
  export: bool = setting(
      True, "After training, write the name-based checkpoint and the "
      "SavedModel to train_dir/export.")
  features_dir: Optional[str] = setting(
      None, "Where frozen features are cached per video and view; default "
      "train_dir/features (cross-validation shares one for all folds).",
      flag=False)
  cross_validation_folds: int = setting(
      0, "K >= 2: k-fold cross-validation by subject instead of one "
      "training, a training per fold in train_dir/fold-<k> and a report; K = "
      "the number of subjects is leave-one-subject-out. Needs subjects.",
      min=0)
  cross_validation_by_video: bool = setting(
      False, "Cross-validation folds over videos instead of subjects, for "
      "data without subjects; optimistic, as a person can be on both sides.")
  learning_curve: str = setting(
      "", "With cross_validation_folds: also train each fold on these "
      "percentages of its training subjects, comma-separated (e.g. "
      "25,50,75), for held-out top-1 against the number of people.")

  def __post_init__(self):
    self.classes = tuple(self.classes)
    if isinstance(self.preprocess, Mapping):
      self.preprocess = PreprocessConfig(**self.preprocess)
    if self.eval_num_frames == 0:
      self.eval_num_frames = None
    check_settings(self)
    if self.cross_validation_folds == 1:
      raise ValueError("cross_validation_folds must be 0 (off) or >= 2")
    percents = self.learning_curve_percents
    if percents and not self.cross_validation_folds:
      raise ValueError("learning_curve needs cross_validation_folds >= 2")
    if any(not 0 < p <= 100 for p in percents):
      raise ValueError("learning_curve percentages must be in (0, 100], got "
                       f"{self.learning_curve!r}")
    if self.eval_num_frames is None and self.eval_num_clips != 1:
      raise ValueError(
          f"eval_num_clips={self.eval_num_clips} clips of the whole video "
          "would be the same clip; set eval_num_frames for several clips")
    if self.preprocess is not None and self.crop_size > (
        self.preprocess.short_side):
      raise ValueError(
          f"crop_size {self.crop_size} does not fit frames whose short_side "
          f"is {self.preprocess.short_side}")

  @property
  def learning_curve_percents(self) -> Tuple[int, ...]:
    """`learning_curve` as sorted percentages, e.g. (25, 50, 75).

    Raises:
      ValueError: if an entry is not an integer.
    """
    try:
      return tuple(sorted({int(p) for p in self.learning_curve.split(",")
                           if p.strip()}))
    except ValueError as e:
      raise ValueError("learning_curve must be comma-separated integer "
                       f"percentages, got {self.learning_curve!r}") from e

  @property
  def streams(self) -> Tuple[str, ...]:
    return streams_lib.parse_streams(self.stream)

  @property
  def boundary(self) -> Optional[str]:
    return TRAINABLE_BOUNDARIES[self.trainable]

  @property
  def uses_feature_cache(self) -> bool:
    """The fast path: with a frozen backbone part, train on its cached outputs.

    Each training video then contributes `feature_views` fixed augmented views
    instead of a new random view every step: far faster on small data, at the
    cost of augmentation variety. `feature_cache=False` turns it off.
    """
    return self.feature_cache and self.boundary is not None

  def preprocessing(self) -> Dict[str, Any]:
    """What the model's inputs must be, for exports and other code.

    Returns:
      {"streams": stream order of the inputs, "fps", "short_side",
      "flow_algorithm", "max_frames" (the `PreprocessConfig`),
      "flow_bound_px": flow clipped to ± this and divided by it,
      "value_range": [low, high] of every input, "crop_size": height and
      width in pixels, "num_frames": training clip length,
      "eval_num_frames": evaluation clip length (None: whole video)}.

    Raises:
      ValueError: if the run saved no preprocessing (`preprocess` is None).
    """
    if self.preprocess is None:
      raise ValueError("the run saved no preprocessing settings")
    return {"streams": list(self.streams), **self.preprocess.to_dict(),
            "flow_bound_px": flow.FLOW_BOUND_PX,
            "value_range": list(MODEL_VALUE_RANGE),
            "crop_size": self.crop_size, "num_frames": self.num_frames,
            "eval_num_frames": self.eval_num_frames}

  def to_json(self) -> Dict[str, Any]:
    value = dataclasses.asdict(self)
    value["classes"] = list(self.classes)
    return value


def save_config(config: TrainConfig) -> None:
  fileio.write_json(os.path.join(config.train_dir, CONFIG_FILE),
                    config.to_json())


def load_config(train_dir: str) -> TrainConfig:
  """Reads the configuration a training run saved.

  Settings added since the run was saved take their defaults; `preprocess`
  is None for runs saved before it was (see `i3d.eval.runs.load_run`).

  Raises:
    FileNotFoundError: if `train_dir` has no config.json.
    ValueError: if a saved value is out of range, naming the file.
  """
  path = os.path.join(train_dir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{train_dir}: not a training directory (no "
                            f"{CONFIG_FILE})")
  with open(path, encoding="utf-8") as f:
    values = json.load(f)
  known = {f.name for f in dataclasses.fields(TrainConfig)}
  try:
    return TrainConfig(**{k: v for k, v in values.items() if k in known})
  except (TypeError, ValueError) as e:
    raise ValueError(f"{path}: {e}") from e
