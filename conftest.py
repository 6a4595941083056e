"""pytest configuration: absl flags are parsed so absltest helpers work."""

from absl import flags


def pytest_configure(config):
  del config  # Unused.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
