"""Tests of i3d.streams: the one stream vocabulary and its validator."""

import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized

from i3d import streams as streams_lib


class ParseStreamsTest(parameterized.TestCase):

  @parameterized.parameters(
      ("joint", ("rgb", "flow")),
      ("rgb", ("rgb",)),
      ("flow", ("flow",)),
      ("flow,rgb", ("rgb", "flow")),
      (("flow", "rgb"), ("rgb", "flow")),
      (["rgb", "rgb"], ("rgb",)),
  )
  def test_selections_in_streams_order(self, spec, expected):
    self.assertEqual(streams_lib.parse_streams(spec), expected)

  @parameterized.parameters(("depth",), ("",), ("rgb,depth",), ((),),
                            (("joint",),))
  def test_rejects(self, spec):
    with self.assertRaisesRegex(ValueError, "Unknown stream"):
      streams_lib.parse_streams(spec)

  def test_channels_name_the_stream(self):
    for stream, channels in streams_lib.CHANNELS.items():
      self.assertEqual(streams_lib.stream_of_channels(channels), stream)
    with self.assertRaisesRegex(ValueError, "4 channels"):
      streams_lib.stream_of_channels(4)

  def test_imports_no_tensorflow(self):
    # Video worker processes import the vocabulary and must start quickly.
    result = subprocess.run(
        [sys.executable, "-c", "import sys, i3d.streams, i3d.video.preprocess, "
         "i3d.config; print('tensorflow' in sys.modules)"],
        capture_output=True, text=True, check=True)
    self.assertEqual(result.stdout.strip(), "False")


if __name__ == "__main__":
  absltest.main()
