r"""Preprocesses a folder or manifest of videos into a cache for training.

  python prepare_data.py --data_dir=videos/ --cache_dir=cache/
  python prepare_data.py --manifest=videos.csv --cache_dir=cache/ \
      --streams=rgb,flow --flow_algorithm=tvl1 --prepare_workers=8

The logic lives in `i3d.data.cache.prepare_dataset`; the exit status is 0 when
every video was prepared, 1 when some failed (listed in the summary), and 2 when
the dataset could not be read as given.
"""

import sys
from typing import Sequence

from absl import app
from absl import flags

from i3d import config as config_lib
from i3d import streams as streams_lib

config_lib.define_flags(config_lib.PrepareConfig)
config_lib.define_flags(config_lib.PreprocessConfig)
_TRAIN_FLAGS = config_lib.define_flags(
    config_lib.TrainConfig, ["cache_dir", "seed"],
    docs={"cache_dir": "Where the prepared dataset is written."})
_STREAMS = flags.DEFINE_list(
    "streams", list(streams_lib.STREAMS),
    "Streams to prepare: rgb, flow or both.")

flags.mark_flags_as_mutual_exclusive(["data_dir", "manifest"], required=True)
flags.mark_flag_as_required("cache_dir")


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  # Imported here, not at the top: worker processes are spawned and re-import
  # this script, and should not each spend seconds importing TensorFlow.
  from i3d.data import cache as data_cache  # pylint: disable=g-import-not-at-top
  try:
    prepare = config_lib.from_flags(config_lib.PrepareConfig)
    report = data_cache.prepare_dataset(
        cache_dir=_TRAIN_FLAGS["cache_dir"].value,
        data_dir=prepare.data_dir,
        manifest=prepare.manifest,
        classes=prepare.classes,
        streams=_STREAMS.value,
        config=config_lib.from_flags(config_lib.PreprocessConfig),
        num_workers=prepare.prepare_workers,
        eval_fraction=prepare.eval_fraction,
        seed=_TRAIN_FLAGS["seed"].value)
  except ValueError as e:
    # Configuration problems (bad manifest, unknown label, bad settings) are
    # reported as one clear line, not a traceback.
    print(f"error: {e}", file=sys.stderr)
    return 2
  # prepare_dataset has logged the summary, failures included.
  return 0 if report.ok else 1


if __name__ == "__main__":
  app.run(main)
