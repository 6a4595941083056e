"""Settings of a training run: `TrainConfig`, saved as `train_dir/config.json`.

The preprocessing settings of the videos (frame rate, short side, flow
algorithm) are `i3d.video.preprocess.PreprocessConfig`, saved in the prepared
cache's metadata.

This module imports no TensorFlow.
"""

import dataclasses
import json
import os
from typing import Any, Dict, Optional, Tuple

from i3d import fileio
from i3d import streams as streams_lib

CONFIG_FILE = "config.json"

# --trainable: which endpoints train. The value names the last frozen
# endpoint; everything after it trains.
TRAINABLE_BOUNDARIES: Dict[str, Optional[str]] = {
    "logits": "Mixed_5c",
    "mixed_5": "MaxPool3d_5a_2x2",
    "mixed_4": "MaxPool3d_4a_3x3",
    "all": None,
}


@dataclasses.dataclass
class TrainConfig:
  """Everything a training run needs; saved as `train_dir/config.json`."""
  cache_dir: str
  train_dir: str
  classes: Tuple[str, ...] = ()
  stream: str = "joint"
  num_frames: int = 64
  crop_size: int = 224
  batch_size: int = 8
  trainable: str = "logits"
  batch_norm_training: bool = False
  learning_rate: float = 0.1
  lr_schedule: str = "cosine"
  warmup_steps: int = 0
  momentum: float = 0.9
  weight_decay: float = 1e-7
  dropout_keep_prob: float = 0.5
  label_smoothing: float = 0.0
  per_stream_loss_weight: float = 0.0
  num_steps: int = 1000
  eval_every: int = 500
  checkpoint_every: int = 200
  keep_checkpoints: int = 3
  log_every: int = 20
  seed: int = 0
  rgb_checkpoint: Optional[str] = None
  flow_checkpoint: Optional[str] = None
  # Batches of training flow clips on which a cross-modality initialised flow
  # stream re-estimates its batch-norm statistics (0 keeps the RGB ones).
  flow_batch_norm_batches: int = 10
  feature_cache: bool = True
  feature_views: int = 8
  eval_num_frames: Optional[int] = None
  eval_num_clips: int = 1
  eval_num_crops: int = 1
  strategy: str = "default"
  mixed_precision: bool = False
  export: bool = True

  def __post_init__(self):
    if self.trainable not in TRAINABLE_BOUNDARIES:
      raise ValueError(f"trainable must be one of {list(TRAINABLE_BOUNDARIES)}"
                       f", got {self.trainable!r}")
    if self.lr_schedule not in ("cosine", "constant"):
      raise ValueError(f"lr_schedule must be cosine or constant, got "
                       f"{self.lr_schedule!r}")
    if self.strategy not in ("default", "mirrored", "multi_worker"):
      raise ValueError(f"strategy must be default, mirrored or multi_worker, "
                       f"got {self.strategy!r}")
    for name in ("num_frames", "crop_size", "batch_size", "num_steps",
                 "feature_views", "eval_num_clips"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.flow_batch_norm_batches < 0:
      raise ValueError("flow_batch_norm_batches must be >= 0, got "
                       f"{self.flow_batch_norm_batches}")
    self.classes = tuple(self.classes)
    streams_lib.parse_streams(self.stream)

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

  def to_json(self) -> Dict[str, Any]:
    value = dataclasses.asdict(self)
    value["classes"] = list(self.classes)
    return value


def save_config(config: TrainConfig) -> None:
  fileio.write_json(os.path.join(config.train_dir, CONFIG_FILE),
                    config.to_json())


def load_config(train_dir: str) -> TrainConfig:
  """Reads the configuration a training run saved.

  Raises:
    FileNotFoundError: if `train_dir` has no config.json.
  """
  path = os.path.join(train_dir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{train_dir}: not a training directory (no "
                            f"{CONFIG_FILE})")
  with open(path, encoding="utf-8") as f:
    values = json.load(f)
  known = {f.name for f in dataclasses.fields(TrainConfig)}
  return TrainConfig(**{k: v for k, v in values.items() if k in known})
