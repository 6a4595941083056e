"""pytest configuration: absl flags are parsed so absltest helpers work."""

from absl import flags

# Before any test module imports TensorFlow: i3d turns oneDNN on (see
# i3d/__init__.py).
import i3d  # pylint: disable=unused-import


def pytest_configure(config):
  del config  # Unused.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
