r"""Procedural synthetic exercise videos: the built-in demo dataset.

A shaded 3D person does one of the classes in `labels.EXERCISE_CLASSES` and a
perspective camera films it. Each class is a pair of keyframes (the rest pose
and the peak of a repetition) over one of four exercise rigs, and its form
fault is a kinematic rule that holds on the generated skeleton: the hips go
below the knees in squat_correct and stop above them in squat_not-low, the feet
rise off the floor during crunch_heels-up, and so on. Everything else is
randomised, within the ranges of `Conditions`, so that what is learnt carries
over to real recordings: the subject's proportions, build, skin and clothes (one
subject id fixes them), the camera's view (side to front), height, distance,
shake and framing (landscape or portrait, off-centre, partly cut), the room
(bare, home or gym, with furniture, equipment and clutter), the light and the
person's shadow, what a phone adds (exposure, white balance, vignetting,
motion blur, defocus, resolution loss, noise, captions, JPEG compression), the
rep speed and holds, the phase at the start and the clip length.

Usage:

  python3 -m i3d_demo.synthetic --output_dir=data/synthetic --clips_per_class=40 \
      --seed=0 --contact_sheet=docs/contact_sheet.png

writes `<output_dir>/<class>/<class>_<index>.mp4` and
`<output_dir>/manifest.csv` with the columns `path,label,subject` (paths
relative to output_dir).

Coordinates are metres in a world whose floor is y = 0, with y up, x the
direction the person faces (their head's direction in a push-up, their knees'
in a crunch) and z to the person's right. Sagittal angles are degrees from +x
towards +y: 0 is forward, 90 is up, -90 is down.
"""

import concurrent.futures
import csv
import dataclasses
import functools
import io
import json
import multiprocessing
import os
import sys
import tempfile
from typing import Any, Callable, Mapping, Sequence

from absl import app
from absl import flags
from absl import logging
import cv2
import numpy as np

from i3d import fileio
from i3d import labels

# Every clip's shorter side, in pixels; its aspect (`Conditions.aspects`)
# sets the longer one (224 for 4:3).
DEFAULT_SHORT_SIDE = 168
DEFAULT_FPS = 25.0
DEFAULT_NUM_SUBJECTS = 10
MANIFEST_NAME = "manifest.csv"
SETTINGS_NAME = "synthetic.json"
# Bump when a change alters the pixels a given seed produces, so that a rerun
# over an older output refuses instead of mixing two generators.
GENERATOR_VERSION = 4  # 3: butt-up and sagging push-ups share depths; 4: domain randomisation.
# The least value of each numeric argument of `generate_dataset` (and flag).
_LOWER_BOUNDS = {"clips_per_class": 1, "seed": 0, "num_subjects": 1,
                 "short_side": 16, "fps": 1, "num_workers": 1}

_MIN_SECONDS, _MAX_SECONDS = 2.4, 4.4
# Rep periods stay shorter than the shortest clip so that every clip shows a
# peak and a rest; real people range from brisk to slow.
_MIN_REP_SECONDS, _MAX_REP_SECONDS = 1.0, 2.3
# Fractions of the frame the whole motion may fill at `Clip.fill` 1. The width
# limit keeps the person inside the centre crop that training takes from 4:3
# frames; larger fills and offsets cut the person, as hand-held phones do.
_MAX_FILL_HEIGHT, _MAX_FILL_WIDTH = 0.68, 0.62
ROOMS = ("plain", "home", "gym")
# Frame width over height: landscape phone and camera, portrait phone.
ASPECTS = (4 / 3, 16 / 9, 3 / 4, 9 / 16)
_SIDES = (("l", -1.0), ("r", 1.0))
# Fixed-point bits for OpenCV drawing, so that limbs move by sub-pixel steps.
_SHIFT = 4
_ONE = 1 << _SHIFT

Skeleton = dict[str, np.ndarray]
# A value, a (low, high) range, or a list of values to choose from.
Range = float | tuple[float, float] | list[float]


@dataclasses.dataclass(frozen=True)
class Body:
  """One subject's proportions (metres) and colours (RGB, 0-255).

  Attributes:
    height: standing height.
    lengths: segment lengths by name ("trunk", "thigh", ...).
    radii: drawn half-thickness of each body part.
    colours: fill colour of each body part.
  """
  height: float
  lengths: Mapping[str, float]
  radii: Mapping[str, float]
  colours: Mapping[str, tuple[float, float, float]]

  @property
  def arm_reach(self) -> float:
    """Shoulder to wrist with the elbow straight."""
    return self.lengths["upper_arm"] + self.lengths["forearm"]

  @property
  def flat_foot(self) -> np.ndarray:
    """Ankle to toe with the sole on the floor."""
    drop = self.lengths["ankle_height"] - self.radii["foot"]
    run = np.sqrt(self.lengths["foot"]**2 - drop**2)
    return np.array([run, -drop, 0.0])


@dataclasses.dataclass(frozen=True)
class ExerciseClass:
  """One class: a rig and the poses a repetition moves between.

  Attributes:
    rig: maps a body and per-frame pose parameters to a skeleton.
    rest: the pose parameters at the start of a rep; a (low, high) range is
      sampled once per clip.
    peak: the parameters that change by the deepest point of the rep; those
      not named keep their rest value.
  """
  rig: Callable[[Body, Mapping[str, np.ndarray]], Skeleton]
  rest: Mapping[str, Range]
  peak: Mapping[str, Range]


@dataclasses.dataclass(frozen=True)
class Conditions:
  """The rendering conditions clips are drawn from: ranges, not values.

  Each range is a tuple of (low, high) intervals, sampled uniformly over
  their union (each interval in proportion to its width). The defaults are
  the demo dataset's; `benchmarks/synthetic_transfer.py` trains under some
  conditions and tests under others never seen.

  Attributes:
    views: the camera's angle from the person's side view in degrees:
      positive turns towards their front (90 films the face), negative
      towards their back. Which side is filmed is a coin toss.
    elevations: camera height as degrees above the horizontal.
    distances: camera distance in body heights; less is more perspective.
    heights: the subject's standing height, metres.
    girths: the subject's limb and trunk thickness, relative to average.
    fills: how much of the allowed frame fraction the motion fills; over 1
      (with `offsets`) cuts the person at the frame's edge.
    offsets: the largest offset of the motion's centre from the frame
      centre, as a fraction of the frame's width and height.
    rooms: names in `ROOMS`: "plain", a bare room; "home", with furniture,
      doors, windows and rugs; "gym", with rubber floor, mirrors, racks and
      weights.
    aspects: frame width over height, one chosen a clip (see `ASPECTS`).
    overlay_probability: the chance of text captions and a logo on top.
    jpeg_qualities: JPEG quality of each frame, as phones and uploads
      compress; 100 leaves frames unchanged.
  """
  views: tuple[tuple[float, float], ...] = ((-35.0, 90.0),)
  elevations: tuple[tuple[float, float], ...] = ((0.0, 35.0),)
  distances: tuple[tuple[float, float], ...] = ((2.2, 6.0),)
  heights: tuple[tuple[float, float], ...] = ((1.45, 2.0),)
  girths: tuple[tuple[float, float], ...] = ((0.8, 1.45),)
  fills: tuple[tuple[float, float], ...] = ((0.55, 1.2),)
  offsets: tuple[float, float] = (0.12, 0.1)
  rooms: tuple[str, ...] = ROOMS
  aspects: tuple[float, ...] = ASPECTS
  overlay_probability: float = 0.35
  jpeg_qualities: tuple[tuple[float, float], ...] = ((15.0, 95.0),)

  def __post_init__(self) -> None:
    """Checks every range, so a bad one fails before anything is written.

    Raises:
      ValueError: naming the field and what is wrong with it.
    """
    for field in ("views", "elevations", "distances", "heights", "girths",
                  "fills", "jpeg_qualities"):
      intervals = getattr(self, field)
      if not intervals or any(len(interval) != 2 or interval[0] > interval[1]
                              for interval in intervals):
        raise ValueError(f"Conditions.{field} must be one or more (low, high) "
                         f"intervals with low <= high, got {intervals!r}")
    unknown = set(self.rooms) - set(ROOMS)
    if not self.rooms or unknown:
      raise ValueError(f"Conditions.rooms must be some of {ROOMS}, got "
                       f"{self.rooms!r}")
    if not self.aspects or min(self.aspects) <= 0:
      raise ValueError(f"Conditions.aspects must be positive width/height "
                       f"ratios, got {self.aspects!r}")
    if not 0 <= self.overlay_probability <= 1:
      raise ValueError("Conditions.overlay_probability must be in [0, 1], got "
                       f"{self.overlay_probability!r}")
    qualities = [q for interval in self.jpeg_qualities for q in interval]
    if min(qualities) < 1 or max(qualities) > 100:
      raise ValueError("Conditions.jpeg_qualities must be within [1, 100], "
                       f"got {self.jpeg_qualities!r}")


def _sample_union(rng: np.random.Generator,
                  intervals: Sequence[tuple[float, float]]) -> float:
  """A uniform sample over a union of (low, high) intervals."""
  widths = np.array([high - low for low, high in intervals], float) + 1e-9
  index = rng.choice(len(intervals), p=widths / widths.sum())
  return float(rng.uniform(*intervals[index]))


@dataclasses.dataclass(frozen=True)
class Clip:
  """Everything random about one clip, drawn from its seed.

  Attributes:
    label: the class name.
    clip_index: the clip's index within its class.
    subject: the subject id; it fixes `body`.
    body: the subject's proportions and colours.
    rest: the sampled rest pose parameters.
    peak: the sampled peak pose parameters (all of rest's keys).
    fps: frame rate.
    num_frames: clip length in frames.
    rep_seconds: duration of one repetition.
    start_phase: where in a repetition the clip starts, in [0, 1).
    azimuth: camera direction in degrees around the vertical: 0 films the
      person's right side, 180 their left; between, the view is oblique.
    elevation: camera height as degrees above the horizontal.
    distance: camera distance in body heights; less is more perspective.
    fill: how much of the allowed frame fraction the motion fills.
    offset: the motion's centre relative to the frame centre, as fractions
      of the frame's width and height.
    width: frame width in pixels.
    height: frame height in pixels.
    room: the room style, one of `ROOMS`.
    overlay: whether captions and a logo are drawn on top.
    jpeg_quality: JPEG quality of each frame (100: none).
    tempo: the share of a repetition spent holding the rest pose, holding the
      peak and going from rest to peak; the rest of the rep returns.
    scene_seed: seeds the room, lighting, shadows, blur, shake, captions and
      noise.
  """
  label: str
  clip_index: int
  subject: int
  body: Body
  rest: Mapping[str, float]
  peak: Mapping[str, float]
  fps: float
  num_frames: int
  rep_seconds: float
  start_phase: float
  azimuth: float
  elevation: float
  distance: float
  fill: float
  offset: tuple[float, float]
  width: int
  height: int
  room: str
  overlay: bool
  jpeg_quality: float
  tempo: tuple[float, float, float]
  scene_seed: int


# ----------------------------------------------------------------------------
# Kinematics.


def _unit(angle: np.ndarray | float) -> np.ndarray:
  """Unit vectors in the sagittal plane, shape (..., 3)."""
  radians = np.deg2rad(angle)
  return np.stack(np.broadcast_arrays(
      np.cos(radians), np.sin(radians), np.zeros_like(radians)), axis=-1)


def _lateral(offset: float) -> np.ndarray:
  return np.array([0.0, 0.0, offset])


def _point(x: float, y: float, num_frames: int) -> np.ndarray:
  return np.tile(np.array([x, y, 0.0]), (num_frames, 1))


def _two_bone_ik(root: np.ndarray, target: np.ndarray, upper: float,
                 lower: float,
                 pole: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Places a two-segment limb from `root` to reach `target`.

  Args:
    root: (T, 3) proximal joints (shoulder or hip).
    target: (T, 3) wanted distal joints; out of reach, the limb points at them.
    upper: proximal segment length.
    lower: distal segment length.
    pole: (3,) or (T, 3) direction the middle joint bends towards.

  Returns:
    The (T, 3) middle joints and the (T, 3) distal joints.
  """
  offset = target - root
  distance = np.linalg.norm(offset, axis=-1, keepdims=True)
  direction = offset / np.maximum(distance, 1e-9)
  reach = np.clip(distance, abs(upper - lower) + 1e-6, upper + lower - 1e-6)
  along = (upper**2 - lower**2 + reach**2) / (2 * reach)
  across = np.sqrt(np.maximum(upper**2 - along**2, 0.0))
  bend = pole - np.sum(pole * direction, axis=-1, keepdims=True) * direction
  bend /= np.maximum(np.linalg.norm(bend, axis=-1, keepdims=True), 1e-9)
  return root + along * direction + across * bend, root + reach * direction


def _torso(body: Body, pelvis: np.ndarray, trunk: np.ndarray,
           neck_flex: np.ndarray) -> Skeleton:
  """Pelvis, hips, spine, shoulders and head.

  Args:
    body: the subject.
    pelvis: (T, 3) midpoint of the hip joints.
    trunk: (T,) angle of the pelvis-to-neck axis.
    neck_flex: (T,) head flexion towards the chest, degrees.

  Returns:
    The joints pelvis, neck, head (centre), chin, face (front of the head),
    shoulder_l/r and hip_l/r.
  """
  length = body.lengths
  axis = _unit(trunk)
  neck = pelvis + length["trunk"] * axis
  shoulders = neck - length["shoulder_drop"] * axis
  head_axis = _unit(trunk - neck_flex)
  head_front = _unit(trunk - neck_flex - 90)
  head_radius = body.radii["head"]
  head = neck + (length["neck"] + head_radius) * head_axis
  joints = {
      "pelvis": pelvis,
      "neck": neck,
      "head": head,
      "chin": head + head_radius * (0.5 * head_front - 0.75 * head_axis),
      "face": head + head_radius * head_front,
  }
  for side, sign in _SIDES:
    joints[f"shoulder_{side}"] = shoulders + _lateral(
        sign * length["shoulder_half_width"])
    joints[f"hip_{side}"] = pelvis + _lateral(sign * length["hip_half_width"])
  return joints


def _angled_limbs(body: Body, joints: Skeleton, pose: Mapping[str, np.ndarray],
                  limbs: Sequence[str]) -> None:
  """Adds arms and/or legs posed by absolute segment angles in `pose`."""
  length = body.lengths
  chains = {
      "arm": ("shoulder", "elbow", "wrist", "upper_arm", "forearm"),
      "leg": ("hip", "knee", "ankle", "thigh", "shank"),
  }
  for limb in limbs:
    root, middle, end, upper, lower = chains[limb]
    for side, _ in _SIDES:
      joints[f"{middle}_{side}"] = (
          joints[f"{root}_{side}"] + length[upper] * _unit(pose[upper]))
      joints[f"{end}_{side}"] = (
          joints[f"{middle}_{side}"] + length[lower] * _unit(pose[lower]))


def _translate(joints: Skeleton, shift: np.ndarray) -> Skeleton:
  return {name: point + shift for name, point in joints.items()}


def _squat(body: Body, pose: Mapping[str, np.ndarray]) -> Skeleton:
  """Feet planted; the pose's segment angles set the depth.

  Pose keys: `shank` (ankle to knee), `thigh_rise` (knee to hip), `trunk`
  (pelvis to neck), `upper_arm`, `forearm` and `neck_flex`.
  """
  length = body.lengths
  ankle = _point(0.0, length["ankle_height"], len(pose["shank"]))
  knee = ankle + length["shank"] * _unit(pose["shank"])
  pelvis = knee + length["thigh"] * _unit(pose["thigh_rise"])
  joints = _torso(body, pelvis, pose["trunk"], pose["neck_flex"])
  _angled_limbs(body, joints, pose, ["arm"])
  for side, sign in _SIDES:
    lateral = _lateral(sign * length["hip_half_width"])
    joints[f"knee_{side}"] = knee + lateral
    joints[f"ankle_{side}"] = ankle + lateral
    joints[f"toe_{side}"] = joints[f"ankle_{side}"] + body.flat_foot
  return joints


def _pull_up(body: Body, pose: Mapping[str, np.ndarray]) -> Skeleton:
  """Hands on a bar high enough that the hanging body clears the floor.

  Pose keys: the segment angles `trunk`, `upper_arm` (shoulder to elbow),
  `forearm`, `thigh` (hip to knee) and `shank`, and `neck_flex`.
  """
  length = body.lengths
  num_frames = len(pose["trunk"])
  joints = _torso(body, _point(0.0, 0.0, num_frames), pose["trunk"],
                  pose["neck_flex"])
  _angled_limbs(body, joints, pose, ["arm", "leg"])
  for side, _ in _SIDES:
    # The foot stays at right angles to the shank, toes forward.
    joints[f"toe_{side}"] = joints[f"ankle_{side}"] + length["foot"] * _unit(
        pose["shank"] + 90)
  hang = (body.arm_reach + length["trunk"] - length["shoulder_drop"] +
          length["thigh"] + length["shank"] + length["foot"])
  bar = _point(0.0, hang + 0.08 * body.height, num_frames)
  hands = 0.5 * (joints["wrist_l"] + joints["wrist_r"])
  joints = _translate(joints, bar - hands)
  joints["bar"] = bar
  return joints


def _push_up(body: Body, pose: Mapping[str, np.ndarray]) -> Skeleton:
  """Toes and hands on the floor; the body pivots on the toes.

  Pose keys: `pike` bends the body at the hips (positive raises them,
  negative sags them), `lift` sets the shoulder height over the wrists as a
  fraction of the arm's reach, and `neck_flex`. The hands sit where the
  shoulders are when the arms are straight.
  """
  length = body.lengths
  pike = pose["pike"]
  num_frames = len(pike)
  # Build the body lying along +x, then rotate it about the toes.
  joints = _torso(body, _point(0.0, 0.0, num_frames), -pike, pose["neck_flex"])
  leg = _unit(180 + pike)
  for side, sign in _SIDES:
    joints[f"knee_{side}"] = joints[f"hip_{side}"] + length["thigh"] * leg
    joints[f"ankle_{side}"] = joints[f"knee_{side}"] + length["shank"] * leg
    joints[f"toe_{side}"] = joints[f"ankle_{side}"] + length["foot"] * _unit(
        270 + pike)
  toe = joints["toe_r"] * np.array([1.0, 1.0, 0.0])
  shoulders = 0.5 * (joints["shoulder_l"] + joints["shoulder_r"]) - toe
  span = np.linalg.norm(shoulders[:, :2], axis=-1)
  hand_radius = body.radii["hand"]
  floor_clearance = hand_radius - body.radii["foot"]  # Wrist minus toe height.
  # The incline that lifts the shoulders to the wanted height over the toes.
  shoulder_height = pose["lift"] * body.arm_reach + floor_clearance
  angle = np.arcsin(np.clip(shoulder_height / span, -1, 1)) - np.arctan2(
      shoulders[:, 1], shoulders[:, 0])
  cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
  placed = {}
  for name, point in joints.items():
    x, y = (point - toe)[:, :1], (point - toe)[:, 1:2]
    placed[name] = np.concatenate([
        cos * x - sin * y, sin * x + cos * y + body.radii["foot"], point[:, 2:]
    ], axis=-1)
  straight = np.sqrt(span**2 - (body.arm_reach + floor_clearance)**2)
  for side, sign in _SIDES:
    # Hands a little wider than the shoulders; elbows bend back and out.
    hand_apart = sign * 1.2 * length["shoulder_half_width"]
    hand = np.stack([straight, np.full(num_frames, hand_radius),
                     np.full(num_frames, hand_apart)], axis=-1)
    placed[f"elbow_{side}"], placed[f"wrist_{side}"] = _two_bone_ik(
        placed[f"shoulder_{side}"], hand, length["upper_arm"],
        length["forearm"], np.array([-1.0, 0.2, sign * 0.8]))
  return placed


def _crunch(body: Body, pose: Mapping[str, np.ndarray],
            hands_on_head: bool) -> Skeleton:
  """Lying on the back, knees bent; the trunk curls up about the pelvis.

  Args:
    body: the subject.
    pose: `curl` (trunk rise, degrees), `neck_flex`, `knee` (interior knee
      angle), `feet_lift` (ankle height above resting, in body heights) and
      `arms` (over 0.5: crossed on the chest; else reaching to the knees).
    hands_on_head: whether the hands hold the back of the head, overriding
      `arms`.

  Returns:
    The skeleton.
  """
  length = body.lengths
  num_frames = len(pose["curl"])
  pelvis = _point(0.0, body.radii["torso_depth"], num_frames)
  joints = _torso(body, pelvis, 180 - pose["curl"], pose["neck_flex"])
  thigh, shank = length["thigh"], length["shank"]
  hip_to_ankle = np.sqrt(thigh**2 + shank**2 -
                         2 * thigh * shank * np.cos(np.deg2rad(pose["knee"])))
  ankle_height = length["ankle_height"] + pose["feet_lift"] * body.height
  ankle_forward = np.sqrt(np.maximum(
      hip_to_ankle**2 - (ankle_height - pelvis[:, 1])**2, 0.0))
  head_front = (joints["face"] - joints["head"]) / body.radii["head"]
  for side, sign in _SIDES:
    lateral = _lateral(sign * length["hip_half_width"])
    ankle = np.stack([ankle_forward, ankle_height, np.zeros(num_frames)],
                     axis=-1) + lateral
    joints[f"knee_{side}"], joints[f"ankle_{side}"] = _two_bone_ik(
        joints[f"hip_{side}"], ankle, thigh, shank, np.array([0.0, 1.0, 0.0]))
    joints[f"toe_{side}"] = joints[f"ankle_{side}"] + body.flat_foot
  for side, sign in _SIDES:
    if hands_on_head:
      # Fingers laced behind the head pull it forward; elbows flare out.
      hand = joints["head"] + body.radii["head"] * (
          -1.1 * head_front + _lateral(sign * 0.7))
      pole = 0.3 * head_front + _lateral(sign)
    elif pose["arms"][0] > 0.5:
      # Hands on the opposite side of the lower chest, elbows down.
      hand = (joints[f"shoulder_{'r' if side == 'l' else 'l'}"] +
              0.45 * (joints["pelvis"] - joints["neck"]))
      pole = np.array([0.0, -1.0, sign * 0.5])
    else:
      hand = joints[f"knee_{side}"]
      pole = np.array([0.0, 1.0, sign * 0.3])
    joints[f"elbow_{side}"], joints[f"wrist_{side}"] = _two_bone_ik(
        joints[f"shoulder_{side}"], hand, length["upper_arm"],
        length["forearm"], pole)
  return joints


_STANDING = {"shank": 90.0, "thigh_rise": 90.0, "trunk": (86.0, 90.0),
             "neck_flex": 0.0, "upper_arm": (-85.0, -75.0),
             "forearm": (-80.0, -65.0)}
_ARMS_FORWARD = {"upper_arm": (-5.0, 10.0), "forearm": (-5.0, 10.0)}
_PUSH_UP_REST = {"lift": 0.97, "neck_flex": (-15.0, -5.0)}
_LOW_PUSH_UP = (0.3, 0.6)
_LYING = {"curl": (0.0, 3.0), "neck_flex": (0.0, 8.0), "knee": (70.0, 100.0),
          "feet_lift": 0.0, "arms": [0.0, 1.0]}
_CRUNCH_PEAK = {"curl": (34.0, 50.0), "neck_flex": (12.0, 25.0)}
_crunch_reaching = functools.partial(_crunch, hands_on_head=False)

# `thigh_rise` is the knee-to-hip angle: past 180 the hip is below the knee.
CLASSES: Mapping[str, ExerciseClass] = {
    "squat_correct": ExerciseClass(_squat, _STANDING, {
        "shank": (48.0, 58.0), "thigh_rise": (186.0, 202.0),
        "trunk": (45.0, 60.0), "neck_flex": (-25.0, -10.0), **_ARMS_FORWARD}),
    # Thighs stop 28-45 degrees above parallel, the trunk still upright.
    "squat_not-low": ExerciseClass(_squat, _STANDING, {
        "shank": (58.0, 66.0), "thigh_rise": (135.0, 152.0),
        "trunk": (62.0, 74.0), "neck_flex": (-20.0, -5.0), **_ARMS_FORWARD}),
    "pull-up_correct": ExerciseClass(_pull_up, {
        "trunk": (88.0, 92.0), "neck_flex": (0.0, 5.0), "upper_arm": 90.0,
        "forearm": 90.0, "thigh": (-95.0, -85.0), "shank": (-125.0, -110.0),
    }, {
        "trunk": (96.0, 104.0), "neck_flex": (-12.0, -5.0),
        "upper_arm": (-80.0, -72.0), "forearm": (82.0, 90.0),
        "thigh": (-80.0, -70.0)}),
    "push-up_not-low": ExerciseClass(
        _push_up, {**_PUSH_UP_REST, "pike": (-3.0, 3.0)},
        {"lift": (0.72, 0.8)}),
    # Butt-up and sagging push-ups share one range of depths, so that the
    # body line, not how low the chest goes, tells them apart: in v2 the
    # sag was shallower than the pike, and real sagging push-ups that went
    # low were called butt-up.
    "push-up_butt-up": ExerciseClass(
        _push_up, {**_PUSH_UP_REST, "pike": (22.0, 36.0)},
        {"lift": _LOW_PUSH_UP}),
    # The hips sag below the line, and more as the chest goes down: the
    # belly nears the floor before the chest does.
    "push-up_not-straight": ExerciseClass(
        _push_up, {**_PUSH_UP_REST, "pike": (-16.0, -12.0)},
        {"lift": _LOW_PUSH_UP, "pike": (-28.0, -22.0),
         "neck_flex": (-25.0, -10.0)}),
    "crunch_correct": ExerciseClass(_crunch_reaching, _LYING, _CRUNCH_PEAK),
    # The feet start low (or down) and the heels rise with the crunch.
    "crunch_heels-up": ExerciseClass(
        _crunch_reaching, {**_LYING, "feet_lift": (0.0, 0.08)},
        {**_CRUNCH_PEAK, "feet_lift": (0.2, 0.28)}),
    "crunch_not-enough": ExerciseClass(
        _crunch_reaching, _LYING,
        {"curl": (8.0, 12.0), "neck_flex": (8.0, 14.0)}),
    "crunch_bad-hands": ExerciseClass(
        functools.partial(_crunch, hands_on_head=True), _LYING,
        {"curl": (32.0, 45.0), "neck_flex": (35.0, 45.0)}),
}


# ----------------------------------------------------------------------------
# Sampling: subjects and clips.


def _sample_colour(rng: np.random.Generator, saturation: tuple[float, float],
                   value: tuple[float, float]) -> tuple[float, float, float]:
  hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*saturation) * 255,
                    rng.uniform(*value) * 255]]], np.uint8)
  return tuple(float(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


_SKIN_TONES = ((255, 219, 172), (241, 194, 125), (224, 172, 105),
               (198, 134, 66), (141, 85, 36), (94, 59, 31))
_HAIR_COLOURS = ((20, 16, 14), (70, 45, 25), (120, 80, 40), (200, 160, 90),
                 (150, 150, 150))


def _pick(rng: np.random.Generator,
          colours: Sequence[tuple[int, int, int]]) -> tuple[float, ...]:
  return tuple(float(c) for c in colours[rng.integers(len(colours))])


def sample_body(subject: int, seed: int,
                conditions: Conditions = Conditions()) -> Body:
  """Draws one subject's proportions and clothes.

  Args:
    subject: the subject id.
    seed: the dataset seed.
    conditions: the ranges of height and girth.

  Returns:
    The same body for the same (subject, seed, conditions).
  """
  rng = np.random.default_rng([seed, 0, subject])
  height = _sample_union(rng, conditions.heights)
  # Fractions of height: roughly human, slightly widened so that limbs stay
  # visible at 112x112.
  fractions = {"trunk": 0.29, "shoulder_drop": 0.035, "neck": 0.04,
               "shoulder_half_width": 0.115, "hip_half_width": 0.06,
               "upper_arm": 0.17, "forearm": 0.15, "thigh": 0.245,
               "shank": 0.245, "ankle_height": 0.045, "foot": 0.11}
  # Limb-to-trunk ratios differ between people by about this much.
  lengths = {name: height * fraction * rng.uniform(0.92, 1.08)
             for name, fraction in fractions.items()}
  girth = _sample_union(rng, conditions.girths)
  radius_fractions = {"upper_arm": 0.036, "forearm": 0.03, "hand": 0.03,
                      "thigh": 0.055, "shank": 0.042, "foot": 0.025,
                      "neck": 0.03, "hips": 0.08, "torso_depth": 0.08,
                      "head": 0.065}
  rigid = ("head", "hand", "foot")  # Parts that girth does not thicken.
  radii = {name: height * fraction * (1.0 if name in rigid else girth)
           for name, fraction in radius_fractions.items()}
  # Between two neighbouring tones of the scale, so that tones are continuous.
  tone = rng.uniform(0, len(_SKIN_TONES) - 1)
  low = int(tone)
  skin = tuple(float(a + (tone - low) * (b - a)) for a, b in zip(
      _SKIN_TONES[low], _SKIN_TONES[min(low + 1, len(_SKIN_TONES) - 1)]))
  # Gym clothes: often black, grey or white, sometimes bright.
  shirt = (_sample_colour(rng, (0.5, 1.0), (0.45, 0.95)) if rng.random() < 0.5
           else _sample_colour(rng, (0.0, 0.15), (0.1, 0.95)))
  bottoms = (_sample_colour(rng, (0.2, 0.9), (0.15, 0.6)) if rng.random() < 0.5
             else _sample_colour(rng, (0.0, 0.15), (0.08, 0.5)))
  long_sleeves, long_legs = rng.random(2) < 0.5
  colours = {
      "head": skin, "neck": skin, "hand": skin,
      # Some heads are shaven or bald.
      "hair": skin if rng.random() < 0.15 else _pick(rng, _HAIR_COLOURS),
      "torso": shirt, "upper_arm": shirt,
      "forearm": shirt if long_sleeves else skin,
      "hips": bottoms, "thigh": bottoms,
      "shank": bottoms if long_legs else skin,
      "foot": _sample_colour(rng, (0.0, 0.6), (0.2, 0.95)),
  }
  return Body(height=height, lengths=lengths, radii=radii, colours=colours)


def _sample_range(rng: np.random.Generator, value: Range) -> float:
  if isinstance(value, tuple):
    return float(rng.uniform(*value))
  if isinstance(value, list):
    return float(value[rng.integers(len(value))])
  return float(value)


def sample_clip(label: str, clip_index: int, seed: int, *,
                num_subjects: int = DEFAULT_NUM_SUBJECTS,
                short_side: int = DEFAULT_SHORT_SIDE,
                fps: float = DEFAULT_FPS,
                conditions: Conditions = Conditions()) -> Clip:
  """Draws one clip's random settings.

  Clip `i` of every class belongs to subject `i % num_subjects`, so with at
  least `num_subjects` clips per class every subject does every class.

  Args:
    label: a name in `CLASSES`.
    clip_index: the clip's index within its class.
    seed: the dataset seed.
    num_subjects: how many subjects share the clips.
    short_side: the frame's shorter side in pixels; the clip's aspect (from
      `conditions.aspects`) sets the longer one.
    fps: frame rate.
    conditions: the ranges the rendering conditions are drawn from.

  Returns:
    The same clip for the same arguments.
  """
  if label not in CLASSES:
    raise ValueError(
        f"unknown class {label!r}; expected one of {list(CLASSES)}")
  exercise = CLASSES[label]
  rng = np.random.default_rng(
      [seed, 1, labels.EXERCISE_CLASSES.index(label), clip_index])
  rest = {key: _sample_range(rng, value)
          for key, value in exercise.rest.items()}
  peak = dict(rest)
  peak.update({key: _sample_range(rng, value)
               for key, value in exercise.peak.items()})
  subject = clip_index % num_subjects
  return Clip(
      label=label,
      clip_index=clip_index,
      subject=subject,
      body=sample_body(subject, seed, conditions),
      rest=rest,
      peak=peak,
      fps=fps,
      num_frames=int(round(rng.uniform(_MIN_SECONDS, _MAX_SECONDS) * fps)),
      rep_seconds=float(rng.uniform(_MIN_REP_SECONDS, _MAX_REP_SECONDS)),
      start_phase=float(rng.random()),
      azimuth=_azimuth(_sample_union(rng, conditions.views),
                       bool(rng.integers(2))),
      elevation=_sample_union(rng, conditions.elevations),
      distance=_sample_union(rng, conditions.distances),
      fill=_sample_union(rng, conditions.fills),
      offset=(float(rng.uniform(-1, 1) * conditions.offsets[0]),
              float(rng.uniform(-1, 1) * conditions.offsets[1])),
      **_frame_size(short_side,
                    conditions.aspects[rng.integers(len(conditions.aspects))]),
      room=conditions.rooms[rng.integers(len(conditions.rooms))],
      overlay=bool(rng.random() < conditions.overlay_probability),
      jpeg_quality=_sample_union(rng, conditions.jpeg_qualities),
      # Holds of at least 50 ms put a frame at the rest and the peak.
      tempo=(float(rng.uniform(0.05, 0.25)), float(rng.uniform(0.05, 0.15)),
             float(rng.uniform(0.3, 0.45))),
      scene_seed=int(rng.integers(2**31)),
  )


def _frame_size(short_side: int, aspect: float) -> dict[str, int]:
  """Width and height of a frame; even, as video codecs want."""
  long_side = 2 * int(round(short_side * max(aspect, 1 / aspect) / 2))
  if aspect >= 1:
    return {"width": long_side, "height": short_side}
  return {"width": short_side, "height": long_side}


def _azimuth(view: float, left_side: bool) -> float:
  """The camera azimuth (see `Clip`) of a view angle from one side."""
  # Azimuth 90 is in front of the person, between the two side views.
  return 180.0 - view if left_side else view


def rep_phase(clip: Clip) -> np.ndarray:
  """How far into its rep each frame is, (T,): 0 at rest, 1 at the peak.

  Each rep holds the rest pose, eases to the peak, holds it and eases back,
  with the shares of `clip.tempo`.
  """
  seconds = np.arange(clip.num_frames) / clip.fps
  cycle = np.mod(seconds / clip.rep_seconds + clip.start_phase, 1.0)
  rest_hold, peak_hold, down = clip.tempo
  up = 1.0 - rest_hold - peak_hold - down
  # Knots of the piecewise-linear progress through the rep, then eased.
  knots = np.cumsum([0.0, rest_hold, down, peak_hold, up])
  progress = np.interp(cycle, knots, [0.0, 0.0, 1.0, 1.0, 0.0])
  return 0.5 - 0.5 * np.cos(np.pi * progress)


def clip_skeleton(clip: Clip) -> Skeleton:
  """The clip's 3D joints by name, each of shape (T, 3), in metres."""
  phase = rep_phase(clip)
  pose = {key: rest + phase * (clip.peak[key] - rest)
          for key, rest in clip.rest.items()}
  return CLASSES[clip.label].rig(clip.body, pose)


# ----------------------------------------------------------------------------
# Camera.


@dataclasses.dataclass(frozen=True)
class _Camera:
  """A pinhole camera fitted so that the clip's motion fills the frame."""
  position: np.ndarray
  rotation: np.ndarray  # Rows: image right, image down, viewing direction.
  scale: float          # Pixels per unit of normalised image coordinates.
  centre: np.ndarray    # Pixel position of the optical axis.

  def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maps (..., 3) world points to (..., 2) pixels and (...) depths."""
    local = (points - self.position) @ self.rotation.T
    depth = local[..., 2]
    return self.scale * local[..., :2] / depth[..., None] + self.centre, depth


def _fit_camera(clip: Clip, skeleton: Skeleton) -> _Camera:
  """Aims the clip's camera at the motion and scales it to fill the frame."""
  points = np.concatenate(
      [p for name, p in skeleton.items() if name != "bar"], axis=0)
  target = 0.5 * (points.min(axis=0) + points.max(axis=0))
  azimuth, elevation = np.deg2rad(clip.azimuth), np.deg2rad(clip.elevation)
  towards_camera = np.array([np.sin(azimuth) * np.cos(elevation),
                             np.sin(elevation),
                             np.cos(azimuth) * np.cos(elevation)])
  position = target + clip.distance * clip.body.height * towards_camera
  forward = -towards_camera
  right = np.cross(forward, [0.0, 1.0, 0.0])
  right /= np.linalg.norm(right)
  down = np.cross(forward, right)
  rotation = np.stack([right, down, forward])
  unit = _Camera(position, rotation, 1.0, np.zeros(2))
  projected, depth = unit.project(points)
  margin = clip.body.radii["head"] / depth.min()
  low, high = projected.min(axis=0) - margin, projected.max(axis=0) + margin
  scale = clip.fill * min(_MAX_FILL_WIDTH * clip.width / (high[0] - low[0]),
                          _MAX_FILL_HEIGHT * clip.height / (high[1] - low[1]))
  frame = np.array([clip.width, clip.height], float)
  centre = frame * (0.5 + np.array(clip.offset)) - scale * 0.5 * (low + high)
  return _Camera(position, rotation, scale, centre)


# ----------------------------------------------------------------------------
# Rendering.


def _fixed(pixel: np.ndarray) -> tuple[int, int]:
  return int(round(pixel[0] * _ONE)), int(round(pixel[1] * _ONE))


def _shade(colour: Sequence[float], factor: float) -> tuple[float, ...]:
  return tuple(min(255.0, c * factor) for c in colour)


def _tint(colour: Sequence[float], amount: float) -> tuple[float, ...]:
  return tuple(c + (255.0 - c) * amount for c in colour)


def _draw_capsule(image: np.ndarray, start: np.ndarray, end: np.ndarray,
                  radius: float, colour: Sequence[float],
                  light: np.ndarray) -> None:
  """A limb: dark outline, fill, and a highlight stripe on the lit side."""
  a, b = _fixed(start), _fixed(end)
  cv2.line(image, a, b, _shade(colour, 0.4), max(1, int(round(2 * radius + 2))),
           cv2.LINE_AA, _SHIFT)
  cv2.line(image, a, b, colour, max(1, int(round(2 * radius))), cv2.LINE_AA,
           _SHIFT)
  if radius >= 2.0:
    along = end - start
    length = np.linalg.norm(along)
    # A hand (zero length) is lit straight from the light's side.
    normal = (light if length < 1e-6 else
              np.array([-along[1], along[0]]) / length)
    normal = normal * (np.sign(normal @ light) or 1.0)
    shift = 0.4 * radius * normal
    cv2.line(image, _fixed(start + shift), _fixed(end + shift),
             _tint(colour, 0.35), max(1, int(round(0.6 * radius))),
             cv2.LINE_AA, _SHIFT)


def _draw_torso(image: np.ndarray, corners: np.ndarray, colour: Sequence[float],
                light: np.ndarray) -> None:
  """The trunk: the hull of its corners, outlined, with a lit patch."""
  hull = cv2.convexHull((corners * _ONE).round().astype(np.int32))
  cv2.fillConvexPoly(image, hull, colour, cv2.LINE_AA, _SHIFT)
  cv2.polylines(image, [hull], True, _shade(colour, 0.4), 2, cv2.LINE_AA,
                _SHIFT)
  centre = corners.mean(axis=0)
  size = np.ptp(corners, axis=0).min()
  highlight = centre + 0.55 * (corners - centre) + 0.18 * size * light
  cv2.fillConvexPoly(
      image, cv2.convexHull((highlight * _ONE).round().astype(np.int32)),
      _tint(colour, 0.2), cv2.LINE_AA, _SHIFT)


def _draw_head(image: np.ndarray, centre: np.ndarray, face: np.ndarray,
               radius: float, skin: Sequence[float],
               hair: Sequence[float]) -> None:
  """A skin disc with hair on the back of the head, so facing shows."""
  front = face - centre
  front /= max(np.linalg.norm(front), 1e-6)
  r = int(round(radius * _ONE))
  cv2.circle(image, _fixed(centre), r + _ONE, _shade(skin, 0.4), -1,
             cv2.LINE_AA, _SHIFT)
  cv2.circle(image, _fixed(centre), r, hair, -1, cv2.LINE_AA, _SHIFT)
  cv2.circle(image, _fixed(centre + 0.3 * radius * front), int(0.75 * r), skin,
             -1, cv2.LINE_AA, _SHIFT)


# Body parts drawn as capsules: (part, start joint, end joint); a trailing "_"
# means one per side.
_CAPSULES = (
    ("thigh", "hip_", "knee_"), ("shank", "knee_", "ankle_"),
    ("foot", "ankle_", "toe_"), ("upper_arm", "shoulder_", "elbow_"),
    ("forearm", "elbow_", "wrist_"), ("hand", "wrist_", "wrist_"),
    ("hips", "hip_l", "hip_r"), ("neck", "neck", "head"),
)


def _draw_person(image: np.ndarray, camera: _Camera, body: Body,
                 joints: Mapping[str, np.ndarray], light: np.ndarray) -> None:
  """Draws one frame's person, far parts first, far side in shadow."""
  pixels, depths = {}, {}
  for name, point in joints.items():
    pixels[name], depths[name] = camera.project(point)
  far_side = "l" if depths["shoulder_l"] > depths["shoulder_r"] else "r"
  parts = []  # (depth, draw function)
  for part, start, end in _CAPSULES:
    sides = [s for s, _ in _SIDES] if start.endswith("_") else [""]
    for side in sides:
      a, b = start + side, end + side
      depth = 0.5 * (depths[a] + depths[b])
      radius = camera.scale * body.radii[part] / depth
      colour = _shade(body.colours[part], 0.75 if side == far_side else 1.0)
      parts.append((depth, functools.partial(
          _draw_capsule, image, pixels[a], pixels[b], radius, colour, light)))
  axis = joints["neck"] - joints["pelvis"]
  front = np.array([axis[1], -axis[0], 0.0]) / np.linalg.norm(axis[:2])
  depth_offset = body.radii["torso_depth"] * front
  corners = [joints[f"{joint}_{side}"] + sign * depth_offset
             for joint in ("shoulder", "hip") for side, _ in _SIDES
             for sign in (-1, 1)]
  parts.append((0.5 * (depths["neck"] + depths["pelvis"]), functools.partial(
      _draw_torso, image, camera.project(np.stack(corners))[0],
      body.colours["torso"], light)))
  parts.append((depths["head"], functools.partial(
      _draw_head, image, pixels["head"], pixels["face"],
      camera.scale * body.radii["head"] / depths["head"], body.colours["head"],
      body.colours["hair"])))
  for _, draw in sorted(parts, key=lambda part: -part[0]):
    draw()


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int],
                  cells: int) -> np.ndarray:
  """Blobby texture in [-1, 1] with about `cells` blobs across."""
  grid = rng.uniform(-1, 1, (max(2, cells * shape[0] // shape[1]), cells))
  return cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _ground_axes(camera: _Camera) -> tuple[np.ndarray, np.ndarray]:
  """Unit floor directions away from the camera and across its view."""
  away = camera.rotation[2] * np.array([1.0, 0.0, 1.0])
  away /= np.linalg.norm(away)
  return away, np.array([-away[2], 0.0, away[0]])


def _fill_polygon(image: np.ndarray, pixels: np.ndarray,
                  colour: Sequence[float]) -> None:
  cv2.fillPoly(image, [(pixels * _ONE).round().astype(np.int32)],
               tuple(float(c) for c in colour), cv2.LINE_AA, _SHIFT)


def _draw_quad(image: np.ndarray, camera: _Camera, corners: np.ndarray,
               colour: Sequence[float]) -> None:
  """A flat 3D quadrilateral (4, 3), if wholly in front of the camera."""
  pixels, depths = camera.project(corners)
  if depths.min() > 0.1:
    _fill_polygon(image, pixels, colour)


def _draw_box(image: np.ndarray, camera: _Camera, centre: np.ndarray,
              size: Sequence[float], colour: Sequence[float],
              light: np.ndarray) -> None:
  """A box standing on the floor, its faces shaded by a directional light.

  Args:
    image: RGB image, drawn into.
    camera: the camera.
    centre: (3,) the centre of its base, on the floor.
    size: its extent along world x, y (up) and z, metres.
    colour: RGB.
    light: (3,) unit direction the light travels.
  """
  low = centre - np.array([size[0] / 2, 0.0, size[2] / 2])
  high = low + np.asarray(size, float)
  middle = 0.5 * (low + high)
  faces = []  # (distance, corners, shade)
  for axis in range(3):
    u, v = [a for a in range(3) if a != axis]
    for bound, sign in ((low, -1.0), (high, 1.0)):
      normal = np.zeros(3)
      normal[axis] = sign
      face_centre = middle.copy()
      face_centre[axis] = bound[axis]
      if (camera.position - face_centre) @ normal <= 0:
        continue  # Faces away from the camera.
      corners = np.tile(face_centre, (4, 1))
      for row, (a, b) in enumerate(((0, 0), (0, 1), (1, 1), (1, 0))):
        corners[row, u] = (low, high)[a][u]
        corners[row, v] = (low, high)[b][v]
      shade = 0.55 + 0.45 * max(0.0, -float(normal @ light))
      faces.append((float(np.linalg.norm(face_centre - camera.position)),
                    corners, shade))
  for _, corners, shade in sorted(faces, key=lambda face: -face[0]):
    _draw_quad(image, camera, corners, _shade(colour, shade))


@dataclasses.dataclass(frozen=True)
class _Room:
  """Where things stand: the floor point under the person and the wall.

  Attributes:
    ground: (3,) the floor point under the motion's centre.
    away: (3,) unit floor direction away from the camera.
    across: (3,) unit floor direction across the view.
    wall: distance from `ground` to the wall behind, along `away`.
    clear: half-extent of the motion along `away`; nothing stands nearer.
    height: the subject's height, the room's unit.
    light: (3,) unit direction the light travels, downwards.
  """
  ground: np.ndarray
  away: np.ndarray
  across: np.ndarray
  wall: float
  clear: float
  height: float
  light: np.ndarray

  def floor(self, along: float, side: float) -> np.ndarray:
    return self.ground + along * self.away + side * self.across

  def wall_quad(self, side: float, width: float, bottom: float,
                top: float) -> np.ndarray:
    """A rectangle on the wall, (4, 3); `side`, `width` across the view."""
    base = self.floor(self.wall, side)
    up = np.array([0.0, 1.0, 0.0])
    return np.stack([base + bottom * up, base + top * up,
                     base + width * self.across + top * up,
                     base + width * self.across + bottom * up])


def _draw_floor(rng: np.random.Generator, image: np.ndarray, camera: _Camera,
                room: _Room, style: str) -> None:
  """Paints the floor up to where it meets the wall behind the person."""
  if style == "gym":  # Dark rubber tiles with flecks.
    colour = np.array(_sample_colour(rng, (0.0, 0.3), (0.1, 0.3)))
    spacing, line_shade = rng.uniform(0.8, 1.2), 0.7
  elif style == "home" and rng.random() < 0.4:  # Carpet or tiles.
    colour = np.array(_sample_colour(rng, (0.05, 0.5), (0.3, 0.8)))
    spacing, line_shade = rng.uniform(0.4, 0.8), 0.85
  else:  # Boards.
    colour = np.array(_sample_colour(rng, (0.05, 0.4), (0.25, 0.7)))
    spacing, line_shade = rng.uniform(0.3, 0.6), 0.8
  texture = colour * (1 + 0.1 * _smooth_noise(rng, image.shape[:2], 12)[
      ..., None])
  if style == "gym":
    flecks = rng.random(image.shape[:2]) < 0.02
    texture[flecks] *= rng.uniform(1.3, 1.8)
  # Seams run parallel to the wall (and across, for tiles); perspective
  # spaces them out.
  for distance in np.arange(rng.uniform(-3.0, -2.5), 3.0, spacing):
    for a, b in ((room.away, room.across), (room.across, room.away)):
      line = room.ground + distance * room.height * a
      ends = camera.project(np.stack([line - 20 * b, line + 20 * b]))
      cv2.line(texture, _fixed(ends[0][0]), _fixed(ends[0][1]),
               tuple(line_shade * colour), 1, cv2.LINE_AA, _SHIFT)
      if style == "plain" or (style == "home" and line_shade == 0.8):
        break  # Boards: one direction only.
  edge = room.floor(room.wall, 0.0)
  edge_pixels = camera.project(np.stack([edge - 20 * room.across,
                                         edge + 20 * room.across]))[0]
  height, width = image.shape[:2]
  # Close the polygon far below the frame.
  below = [[50 * width, 10 * height], [-50 * width, 10 * height]]
  mask = np.zeros((height, width), np.uint8)
  cv2.fillPoly(mask, [np.concatenate([edge_pixels, below]).round().astype(
      np.int32)], 1)
  image[mask > 0] = texture[mask > 0]


def _draw_mat(rng: np.random.Generator, image: np.ndarray, camera: _Camera,
              skeleton: Skeleton, body_height: float) -> None:
  """An exercise mat under the whole motion."""
  colour = _sample_colour(rng, (0.3, 0.9), (0.3, 0.8))
  xs = np.array([p[:, 0] for name, p in skeleton.items() if name != "bar"])
  front, back = xs.max() + 0.2, xs.min() - 0.2
  half_width = 0.35 * body_height
  _draw_quad(image, camera, np.array([
      [back, 0.0, half_width], [front, 0.0, half_width],
      [front, 0.0, -half_width], [back, 0.0, -half_width]]), colour)


def _draw_bar(image: np.ndarray, camera: _Camera, bar: np.ndarray,
              body_height: float) -> None:
  """A wall-mounted pull-up bar.

  Its far end is held by a bracket on a post behind the person, so that no
  support crosses the body.
  """
  away, _ = _ground_axes(camera)
  far = bar + _lateral(0.5 * body_height * np.sign(away[2] or 1.0))
  near = bar - (far - bar)
  bracket = far - np.array([0.45 * body_height, 0.0, 0.0])
  base = bracket * np.array([1.0, 0.0, 1.0])
  for start, end in ((base, bracket), (bracket, far), (far, near)):
    (a, b), depths = camera.project(np.stack([start, end]))
    if depths.min() > 0.1:
      radius = 0.02 * body_height * camera.scale / depths.mean()
      _draw_capsule(image, a, b, radius, (150, 150, 160),
                    np.array([0.0, -1.0]))


def _draw_wall_items(rng: np.random.Generator, image: np.ndarray,
                     camera: _Camera, room: _Room, style: str,
                     wall: np.ndarray) -> None:
  """Windows, doors, posters, mirrors and a skirting board on the wall."""
  h = room.height
  items = {"plain": 1, "home": 4, "gym": 3}[style]
  for _ in range(rng.integers(0, items + 1)):
    side = rng.uniform(-3.0, 2.0) * h
    kind = rng.choice(["window", "door", "poster", "mirror"] if style != "gym"
                      else ["mirror", "mirror", "poster", "window"])
    if kind == "window":
      quad = room.wall_quad(side, rng.uniform(0.5, 1.0) * h, 0.5 * h,
                            rng.uniform(1.0, 1.3) * h)
      colour = _tint(_sample_colour(rng, (0.0, 0.3), (0.7, 1.0)), 0.5)
    elif kind == "door":
      quad = room.wall_quad(side, 0.48 * h, 0.0, 1.15 * h)
      colour = _sample_colour(rng, (0.0, 0.5), (0.3, 0.95))
    elif kind == "mirror":  # Reflects a paler, blurred copy of the room.
      quad = room.wall_quad(side, rng.uniform(0.6, 1.5) * h, 0.2 * h, 1.2 * h)
      colour = _tint(wall, 0.35)
    else:
      quad = room.wall_quad(side, rng.uniform(0.2, 0.4) * h,
                            rng.uniform(0.7, 0.9) * h, rng.uniform(1.0, 1.2) * h)
      colour = _sample_colour(rng, (0.3, 1.0), (0.2, 1.0))
    frame_colour = _shade(colour, 0.6)
    _draw_quad(image, camera, quad, frame_colour)
    inset = quad + 0.04 * h * (quad.mean(axis=0) - quad) / np.linalg.norm(
        quad.mean(axis=0) - quad, axis=-1, keepdims=True)
    _draw_quad(image, camera, inset, colour)
  if style != "plain":
    _draw_quad(image, camera, room.wall_quad(-20.0, 40.0, 0.0, 0.05 * h),
               _shade(wall, rng.uniform(0.5, 1.3)))


def _draw_equipment(rng: np.random.Generator, image: np.ndarray,
                    camera: _Camera, room: _Room, style: str) -> None:
  """Furniture, gym equipment and clutter standing behind the person."""
  h = room.height
  count = {"plain": rng.integers(0, 2), "home": rng.integers(2, 6),
           "gym": rng.integers(3, 8)}[style]
  kinds = {"plain": ["clutter"],
           "home": ["sofa", "shelf", "table", "plant", "clutter", "clutter"],
           "gym": ["rack", "bench", "dumbbells", "plates", "clutter", "ball"]}
  placed = []
  for _ in range(count):
    kind = rng.choice(kinds[style])
    # Between the motion and the wall, or against the wall; nearer ones first
    # in depth order is kept by drawing far to near below.
    along = rng.uniform(room.clear + 0.2 * h, max(room.wall, room.clear +
                                                   0.3 * h))
    side = rng.uniform(-2.5, 2.5) * h
    placed.append((along, side, kind))
  for along, side, kind in sorted(placed, key=lambda p: -p[0]):
    base = room.floor(along, side)
    colour = _sample_colour(rng, (0.0, 0.8), (0.15, 0.9))
    if kind == "sofa":
      _draw_box(image, camera, base, (0.5 * h, 0.25 * h, 1.1 * h), colour,
                room.light)
      _draw_box(image, camera, base + 0.2 * h * room.away,
                (0.15 * h, 0.5 * h, 1.1 * h), colour, room.light)
    elif kind == "shelf":
      _draw_box(image, camera, base, (0.2 * h, rng.uniform(0.6, 1.1) * h,
                                      0.5 * h), colour, room.light)
    elif kind == "table":
      _draw_box(image, camera, base, (0.4 * h, 0.4 * h, 0.6 * h), colour,
                room.light)
    elif kind == "plant":
      _draw_box(image, camera, base, (0.12 * h, 0.15 * h, 0.12 * h),
                colour, room.light)
      centre, depth = camera.project(base + np.array([0, 0.35 * h, 0]))
      if depth > 0.1:
        cv2.circle(image, _fixed(centre), int(_ONE * 0.15 * h * camera.scale /
                                             depth), (40, 110, 45), -1,
                   cv2.LINE_AA, _SHIFT)
    elif kind == "rack":
      grey = _sample_colour(rng, (0.0, 0.2), (0.1, 0.5))
      for offset in (-0.4, 0.4):
        _draw_box(image, camera, base + offset * h * room.across,
                  (0.05 * h, 1.2 * h, 0.05 * h), grey, room.light)
      _draw_box(image, camera, base + np.array([0, 0.75 * h, 0]),
                (0.05 * h, 0.04 * h, 0.9 * h), grey, room.light)
    elif kind == "bench":
      _draw_box(image, camera, base, (0.25 * h, 0.27 * h, 0.7 * h),
                _sample_colour(rng, (0.0, 0.6), (0.05, 0.4)), room.light)
    elif kind == "dumbbells":
      _draw_box(image, camera, base, (0.25 * h, 0.35 * h, 1.0 * h),
                (60, 60, 65), room.light)
      for step in np.linspace(-0.4, 0.4, 6):
        centre, depth = camera.project(
            base + np.array([0, 0.4 * h, 0]) + step * h * room.across)
        if depth > 0.1:
          cv2.circle(image, _fixed(centre), int(_ONE * 0.05 * h *
                                               camera.scale / depth),
                     (25, 25, 28), -1, cv2.LINE_AA, _SHIFT)
    elif kind in ("plates", "ball"):
      radius = (0.2 if kind == "plates" else 0.13) * h
      centre, depth = camera.project(base + np.array([0, radius, 0]))
      if depth > 0.1:
        pixels = radius * camera.scale / depth
        cv2.circle(image, _fixed(centre), int(_ONE * pixels),
                   (30, 30, 32) if kind == "plates" else colour, -1,
                   cv2.LINE_AA, _SHIFT)
        cv2.circle(image, _fixed(centre), int(_ONE * pixels * 0.25),
                   (90, 90, 95) if kind == "plates" else _tint(colour, 0.3),
                   -1, cv2.LINE_AA, _SHIFT)
    else:  # Clutter: bags, boxes, bottles.
      _draw_box(image, camera, base, rng.uniform(0.05, 0.25, 3) * h, colour,
                room.light)


def _make_room(rng: np.random.Generator, camera: _Camera,
               skeleton: Skeleton, body_height: float) -> _Room:
  away, across = _ground_axes(camera)
  points = np.concatenate(
      [p for name, p in skeleton.items() if name != "bar"], axis=0)
  ground = 0.5 * (points.min(axis=0) + points.max(axis=0)) * np.array(
      [1.0, 0.0, 1.0])
  clear = float(np.abs((points - ground) @ away).max())
  wall = clear + rng.uniform(0.2, 1.2) * body_height
  # From above, from one side of the view, a little towards the wall.
  light = (np.array([0.0, -1.0, 0.0]) + rng.uniform(-0.7, 0.7) * across +
           rng.uniform(-0.2, 0.5) * away)
  return _Room(ground, away, across, wall, clear, body_height,
               light / np.linalg.norm(light))


def _render_background(rng: np.random.Generator, clip: Clip, camera: _Camera,
                       skeleton: Skeleton, room: _Room,
                       margin: int) -> np.ndarray:
  """The room as float RGB, `margin` pixels larger on every side for shake."""
  size = (clip.height + 2 * margin, clip.width + 2 * margin)
  camera = dataclasses.replace(camera, centre=camera.centre + margin)
  # Greyer than the clothes, so that the person stands out.
  wall = np.array(_sample_colour(rng, (0.0, 0.3), (0.35, 0.85)))
  image = wall * (1 + 0.12 * _smooth_noise(rng, size, 6)[..., None])
  _draw_wall_items(rng, image, camera, room, clip.room, wall)
  _draw_floor(rng, image, camera, room, clip.room)
  if rng.random() < (0.3 if clip.room == "home" else 0.6):
    _draw_mat(rng, image, camera, skeleton, clip.body.height)
  elif clip.room == "home" and rng.random() < 0.5:  # A rug.
    corners = [room.floor(a * room.height, s * room.height)
               for a, s in ((-0.9, -1.2), (-0.9, 1.2), (0.9, 1.2),
                            (0.9, -1.2))]
    _draw_quad(image, camera, np.array(corners),
               _sample_colour(rng, (0.2, 0.8), (0.2, 0.7)))
  _draw_equipment(rng, image, camera, room, clip.room)
  if "bar" in skeleton:
    _draw_bar(image, camera, skeleton["bar"][0], clip.body.height)
  # Light falls off across the room from a random side.
  ys, xs = np.mgrid[0:size[0], 0:size[1]]
  angle = rng.uniform(0, 2 * np.pi)
  ramp = (np.cos(angle) * xs + np.sin(angle) * ys) / max(size)
  image *= (rng.uniform(0.8, 1.1) + rng.uniform(0.1, 0.3) * ramp)[..., None]
  return np.clip(image, 0, 255).astype(np.float32)


def _draw_shadow(frame: np.ndarray, camera: _Camera, body: Body,
                 joints: Mapping[str, np.ndarray], light: np.ndarray,
                 strength: float, softness: float) -> None:
  """Darkens the floor where the person's limbs cast their shadow."""
  mask = np.zeros(frame.shape[:2], np.float32)
  names = [n for n in joints if n != "bar"]
  # Along the light down to the floor.
  floor = {n: joints[n] - joints[n][1] / light[1] * light for n in names}
  pixels, depths = {}, {}
  for name in names:
    pixels[name], depths[name] = camera.project(floor[name])
  if min(depths.values()) < 0.1:
    return
  segments = [(s + side, e + side, part) for part, s, e in _CAPSULES
              for side in ("l", "r") if s.endswith("_")]
  segments += [("pelvis", "neck", "torso_depth"), ("neck", "head", "head")]
  for start, end, part in segments:
    depth = 0.5 * (depths[start] + depths[end])
    width = max(1, int(round(2 * camera.scale * body.radii[part] / depth)))
    cv2.line(mask, _fixed(pixels[start]), _fixed(pixels[end]), 1.0, width,
             cv2.LINE_AA, _SHIFT)
  mask = cv2.GaussianBlur(mask, (0, 0), softness)
  frame *= (1.0 - strength * np.minimum(mask, 1.0))[..., None]


_CAPTIONS = ("SQUATS", "Day 12", "form check", "PUSH UPS", "abs workout",
             "how to crunch", "@gym_life", "#fitness", "3 x 10", "LEG DAY",
             "home workout", "slow and controlled", "00:14", "REC", "week 3",
             "coach tip: watch the hips")


def _overlay(rng: np.random.Generator, height: int,
             width: int) -> tuple[np.ndarray, np.ndarray]:
  """Captions and a logo drawn after filming: an RGB image and its alpha."""
  # 8 bits, as OpenCV writes text only there; alpha 255 is opaque.
  image = np.zeros((height, width, 3), np.uint8)
  alpha = np.zeros((height, width), np.uint8)
  font = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX,
          cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN][rng.integers(4)]
  for _ in range(rng.integers(1, 3)):
    text = _CAPTIONS[rng.integers(len(_CAPTIONS))]
    scale = rng.uniform(0.25, 0.6) * min(height, width) / 120
    (text_width, text_height), _ = cv2.getTextSize(text, font, scale, 1)
    x = int(rng.uniform(0, max(1, width - text_width)))
    y = int(rng.choice([rng.uniform(0.05, 0.2), rng.uniform(0.8, 0.97)]) *
            height) + text_height // 2
    colour = [(255, 255, 255), (255, 230, 0), (20, 20, 20),
              (255, 60, 60)][rng.integers(4)]
    if rng.random() < 0.4:  # A caption box behind the text.
      box = _sample_colour(rng, (0.0, 1.0), (0.0, 0.9))
      cv2.rectangle(image, (x - 3, y - text_height - 3), (x + text_width + 3,
                                                          y + 4), box, -1)
      cv2.rectangle(alpha, (x - 3, y - text_height - 3), (x + text_width + 3,
                                                          y + 4),
                    int(rng.uniform(128, 255)), -1)
    thickness = max(1, int(round(scale * 1.5)))
    for target, value in ((image, colour), (alpha, 255)):
      cv2.putText(target, text, (x, y), font, scale, value, thickness,
                  cv2.LINE_AA)
  if rng.random() < 0.5:  # A channel logo in a corner.
    radius = int(rng.uniform(0.04, 0.08) * min(height, width)) + 2
    centre = (int(rng.choice([radius + 3, width - radius - 3])),
              int(rng.choice([radius + 3, height - radius - 3])))
    cv2.circle(image, centre, radius, _sample_colour(rng, (0.5, 1), (0.5, 1)),
               -1, cv2.LINE_AA)
    cv2.circle(alpha, centre, radius, int(rng.uniform(150, 255)), -1,
               cv2.LINE_AA)
  return image.astype(np.float32), alpha[..., None].astype(np.float32) / 255


def _camera_shake(rng: np.random.Generator, num_frames: int,
                  amplitude: float) -> np.ndarray:
  """Smooth per-frame integer pixel offsets, shape (T, 2)."""
  walk = np.cumsum(rng.normal(size=(num_frames + 8, 2)), axis=0)
  walk = cv2.blur(walk, (1, 9))[4:-4]
  walk -= walk.mean(axis=0)
  walk *= amplitude / max(np.abs(walk).max(), 1e-6)
  return np.round(walk).astype(int)


def _jpeg(frame: np.ndarray, quality: float) -> np.ndarray:
  """A uint8 RGB frame after JPEG compression at `quality` (0-100)."""
  ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY,
                                          int(round(quality))])
  if not ok:
    raise RuntimeError("JPEG encoding failed")
  return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


def render_clip(clip: Clip) -> np.ndarray:
  """Renders a clip.

  The person and room are drawn, then what a phone and an upload add: the
  person's shadow, exposure and white balance, vignetting, motion blur and
  defocus, resolution loss, sensor noise, captions (`clip.overlay`) and
  JPEG compression (`clip.jpeg_quality`).

  Args:
    clip: from `sample_clip`.

  Returns:
    The frames, uint8 RGB of shape (T, height, width, 3).
  """
  rng = np.random.default_rng(clip.scene_seed)
  skeleton = clip_skeleton(clip)
  camera = _fit_camera(clip, skeleton)
  shake = _camera_shake(rng, clip.num_frames,
                        rng.uniform(0.5, 0.03 * min(clip.height, clip.width)))
  margin = int(np.abs(shake).max()) + 1
  room = _make_room(rng, camera, skeleton, clip.body.height)
  background = _render_background(rng, clip, camera, skeleton, room, margin)
  light = np.array([rng.choice([-0.5, 0.5]), -0.85])
  shadow = (rng.uniform(0.2, 0.55), rng.uniform(1.0, 4.0)
            ) if rng.random() < 0.8 else None
  # Vignetting darkens the corners (of the room; the person stays central).
  ys, xs = np.mgrid[0:background.shape[0], 0:background.shape[1]]
  radius = np.hypot(xs / background.shape[1] - 0.5,
                    ys / background.shape[0] - 0.5)
  background *= (1 - rng.uniform(0.0, 0.8) * radius**2)[..., None]
  # Exposure, white balance and gamma, as one table per channel.
  levels = np.arange(256, dtype=np.float64)[:, None] / 255.0
  gain = rng.uniform(0.65, 1.25) * rng.uniform(0.88, 1.12, 3)
  grade = np.clip(255.0 * np.minimum(levels * gain, 1.0)**rng.uniform(
      0.8, 1.25), 0, 255).round().astype(np.uint8)[:, None, :]
  exposure = rng.uniform(0.0, 0.5) if rng.random() < 0.5 else 0.0
  defocus = rng.uniform(0.4, 1.2) if rng.random() < 0.4 else 0.0
  downscale = rng.uniform(0.45, 0.9) if rng.random() < 0.4 else 1.0
  noise_sigma = rng.uniform(1.0, 7.0)
  overlay = _overlay(rng, clip.height, clip.width) if clip.overlay else None
  # A few noise images reused in random order cost far less than one a frame.
  noise_bank = (rng.normal(0, noise_sigma, (4, clip.height, clip.width, 3))
                .round().astype(np.int16))
  frames = np.empty((clip.num_frames, clip.height, clip.width, 3), np.uint8)
  previous = None
  for t in range(clip.num_frames):
    dx, dy = shake[t]
    frame = background[margin + dy:margin + dy + clip.height,
                       margin + dx:margin + dx + clip.width].copy()
    shaken = dataclasses.replace(camera, centre=camera.centre - shake[t])
    joints = {name: point[t] for name, point in skeleton.items()}
    if shadow:
      _draw_shadow(frame, shaken, clip.body, joints, room.light, *shadow)
    # Anti-aliased drawing needs 8 bits.
    frame = frame.round().astype(np.uint8)
    _draw_person(frame, shaken, clip.body, joints, light)
    frame = cv2.LUT(frame, grade)
    # The shutter stays open across part of the last frame's motion.
    shot = frame if previous is None or not exposure else cv2.addWeighted(
        frame, 1 - exposure, previous, exposure, 0.0)
    previous = frame
    if defocus:
      shot = cv2.GaussianBlur(shot, (0, 0), defocus)
    if downscale < 1.0:
      small = cv2.resize(shot, None, fx=downscale, fy=downscale,
                         interpolation=cv2.INTER_AREA)
      shot = cv2.resize(small, (clip.width, clip.height),
                        interpolation=cv2.INTER_LINEAR)
    shot = np.clip(shot + noise_bank[rng.integers(len(noise_bank))], 0, 255)
    if overlay is not None:
      shot = shot * (1 - overlay[1]) + overlay[0] * overlay[1]
    frames[t] = shot.round() if overlay is not None else shot
    if clip.jpeg_quality < 100:
      frames[t] = _jpeg(frames[t], clip.jpeg_quality)
  return frames


def encode_mp4(frames: np.ndarray, fps: float) -> bytes:
  """Encodes uint8 RGB frames (T, H, W, 3) as MPEG-4 Part 2 in an mp4 file."""
  with tempfile.TemporaryDirectory() as directory:
    # OpenCV picks the container from the file name, so it cannot write to
    # an atomic temporary path directly.
    path = os.path.join(directory, "clip.mp4")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                             (frames.shape[2], frames.shape[1]))
    if not writer.isOpened():
      raise RuntimeError("OpenCV cannot write mp4v video; is FFmpeg built in?")
    for frame in frames:
      writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    with open(path, "rb") as f:
      return f.read()


# ----------------------------------------------------------------------------
# Datasets and contact sheets.


def clip_path(label: str, clip_index: int) -> str:
  """A clip's path relative to the dataset directory."""
  return f"{label}/{label}_{clip_index:04d}.mp4"


def _write_clip(output_dir: str, clip: Clip) -> None:
  path = os.path.join(output_dir, clip_path(clip.label, clip.clip_index))
  fileio.write_bytes(path, encode_mp4(render_clip(clip), clip.fps))


def _is_whole(path: str, clip: Clip) -> bool:
  """Whether `path` holds a video of the clip's length.

  Clips are written atomically, so a file that is empty, cut short or not a
  video was damaged afterwards (a full disk, a failed copy): render it again.
  """
  if not os.path.isfile(path) or os.path.getsize(path) == 0:
    return False
  capture = cv2.VideoCapture(path)
  try:
    return (capture.isOpened() and
            int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == clip.num_frames)
  finally:
    capture.release()


def _init_worker() -> None:
  cv2.setNumThreads(1)  # Parallelism comes from the processes.


def _differences(previous: Mapping[str, Any], current: Mapping[str, Any],
                 prefix: str = "") -> list[tuple[str, Any, Any]]:
  """(dotted key, previous value, current value) of each leaf that differs."""
  differences = []
  for key in sorted(set(previous) | set(current)):
    old, new = previous.get(key), current.get(key)
    if isinstance(old, Mapping) and isinstance(new, Mapping):
      differences += _differences(old, new, f"{prefix}{key}.")
    elif old != new:
      differences.append((f"{prefix}{key}", old, new))
  return differences


def _check_settings(output_dir: str, settings: Mapping[str, object]) -> None:
  """Records the settings that decide the pixels, or checks them on a rerun.

  Raises:
    ValueError: naming the settings that differ, if `output_dir` holds clips
      made with others (e.g. by an older generator version).
  """
  path = os.path.join(output_dir, SETTINGS_NAME)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      previous = json.load(f)
    if previous.get("generator_version") != settings["generator_version"]:
      raise ValueError(
          f"{output_dir} holds clips of generator version "
          f"{previous.get('generator_version')}; this is version "
          f"{settings['generator_version']}: delete the folder (and the "
          "cache prepared from it, and any run trained on it) to regenerate, "
          "or use another directory")
    if previous != settings:
      changed = ", ".join(
          f"{key} {previous_value!r} there, {value!r} now"
          for key, previous_value, value in _differences(previous, settings))
      raise ValueError(
          f"{output_dir} holds clips made with other settings ({changed}); "
          "delete it (and the cache prepared from it) to regenerate, or use "
          "another directory")
  else:
    fileio.write_json(path, dict(settings))


def generate_dataset(output_dir: str, clips_per_class: int, seed: int, *,
                     num_subjects: int = DEFAULT_NUM_SUBJECTS,
                     short_side: int = DEFAULT_SHORT_SIDE,
                     fps: float = DEFAULT_FPS, num_workers: int = 1,
                     conditions: Conditions = Conditions()) -> str:
  """Writes the synthetic dataset, completing whatever is missing.

  Each video is written atomically and the manifest last, so an interrupted
  run leaves only whole files and a rerun with the same settings finishes it,
  rendering again any clip whose file is missing, empty or not of the clip's
  length; over a complete output a rerun writes nothing.

  Args:
    output_dir: the dataset directory.
    clips_per_class: clips of each class.
    seed: the dataset seed.
    num_subjects: subjects sharing the clips; clip i is subject
      `i % num_subjects`.
    short_side: every frame's shorter side in pixels, even (see
      `sample_clip`).
    fps: frame rate.
    num_workers: processes rendering clips in parallel.
    conditions: the ranges the rendering conditions are drawn from.

  Returns:
    The manifest's path.

  Raises:
    ValueError: on invalid arguments, or if `output_dir` holds clips made with
      other settings.
  """
  given = {"clips_per_class": clips_per_class, "seed": seed,
           "num_subjects": num_subjects, "short_side": short_side,
           "fps": fps, "num_workers": num_workers}
  for name, least in _LOWER_BOUNDS.items():
    if given[name] < least:
      raise ValueError(f"{name} must be at least {least}, got {given[name]}")
  if short_side % 2:
    raise ValueError(f"short_side must be even, as video codecs want; "
                     f"got {short_side}")
  settings = {"generator_version": GENERATOR_VERSION, "seed": seed,
              "num_subjects": num_subjects, "short_side": short_side,
              "fps": fps,
              # Through JSON, so that it compares equal to a reread copy.
              "conditions": json.loads(json.dumps(
                  dataclasses.asdict(conditions)))}
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise ValueError(f"{output_dir} is not a directory")
  os.makedirs(output_dir, exist_ok=True)
  _check_settings(output_dir, settings)
  clips = [sample_clip(label, index, seed, num_subjects=num_subjects,
                       short_side=short_side, fps=fps,
                       conditions=conditions)
           for label in CLASSES for index in range(clips_per_class)]
  missing = [clip for clip in clips if not _is_whole(
      os.path.join(output_dir, clip_path(clip.label, clip.clip_index)), clip)]
  logging.info("%s: %d of %d clips to render", output_dir, len(missing),
               len(clips))
  if num_workers == 1 or len(missing) <= 1:
    for clip in missing:
      _write_clip(output_dir, clip)
  else:
    # Spawned workers stay safe when the caller has started TensorFlow threads.
    with concurrent.futures.ProcessPoolExecutor(
        min(num_workers, len(missing)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker) as pool:
      # Listing the results re-raises any worker's exception here.
      list(pool.map(functools.partial(_write_clip, output_dir), missing))
  manifest = io.StringIO()
  writer = csv.writer(manifest, lineterminator="\n")
  writer.writerow(["path", "label", "subject"])
  for clip in clips:
    writer.writerow([clip_path(clip.label, clip.clip_index), clip.label,
                     clip.subject])
  path = os.path.join(output_dir, MANIFEST_NAME)
  if not _file_equals(path, manifest.getvalue()):
    fileio.write_text(path, manifest.getvalue())
  return path


def _file_equals(path: str, text: str) -> bool:
  if not os.path.exists(path):
    return False
  with open(path, encoding="utf-8", newline="") as f:
    return f.read() == text


def _peak_centred_frames(clip: Clip, count: int) -> list[int]:
  """`count` frame indices spanning one rep, rest to peak to rest.

  Where the rep around the peak runs past the clip's start or end, the frame
  at the same phase one rep later or earlier stands in (every clip is longer
  than a rep), so no frame repeats.
  """
  peak = int(np.argmax(rep_phase(clip)))
  span = clip.rep_seconds * clip.fps
  indices = peak + np.round((np.arange(count) / count - 0.5) * span)
  indices = np.where(indices < 0, indices + span, indices)
  indices = np.where(indices > clip.num_frames - 1, indices - span, indices)
  return list(np.clip(np.round(indices), 0, clip.num_frames - 1).astype(int))


def _letterbox(frame: np.ndarray, width: int, height: int) -> np.ndarray:
  """`frame` shrunk to fit a width x height box, centred on dark grey."""
  scale = min(width / frame.shape[1], height / frame.shape[0])
  size = (max(1, int(round(frame.shape[1] * scale))),
          max(1, int(round(frame.shape[0] * scale))))
  box = np.full((height, width, 3), 40, np.uint8)
  top, left = (height - size[1]) // 2, (width - size[0]) // 2
  box[top:top + size[1], left:left + size[0]] = cv2.resize(
      frame, size, interpolation=cv2.INTER_AREA)
  return box


def render_contact_sheet(seed: int, *, columns: int = 6,
                         clips_per_row: int = 2,
                         thumbnail_height: int = 96,
                         num_subjects: int = DEFAULT_NUM_SUBJECTS,
                         short_side: int = DEFAULT_SHORT_SIDE,
                         fps: float = DEFAULT_FPS,
                         label_width: int = 170) -> np.ndarray:
  """A grid of frames, one row per class, from clips of different subjects.

  Args:
    seed: the dataset seed.
    columns: frames per row.
    clips_per_row: clips shown in each row, each by `columns //
      clips_per_row` frames spanning one repetition.
    thumbnail_height: frames are letterboxed into 4:3 boxes of this height
      (at most `short_side`).
    num_subjects: as for `generate_dataset`.
    short_side: as for `generate_dataset`.
    fps: frame rate.
    label_width: width of the class-name column in pixels.

  Returns:
    A uint8 RGB image with one row of `columns` frames per class after a
    column of class names.
  """
  thumb_height = min(short_side, thumbnail_height)
  thumb_width = int(round(thumb_height * 4 / 3))
  rows = []
  for row, label in enumerate(CLASSES):
    # Row i shows clips i, i + 10, ... of its class (as in a dataset of the
    # same seed): different subjects, rooms and views on every row.
    frames = []
    for index in range(row, row + 10 * clips_per_row, 10):
      clip = sample_clip(label, index, seed, num_subjects=num_subjects,
                         short_side=short_side, fps=fps)
      shown = render_clip(clip)[_peak_centred_frames(
          clip, columns // clips_per_row)]
      frames += [_letterbox(frame, thumb_width, thumb_height)
                 for frame in shown]
    name = np.full((thumb_height, label_width, 3), 255, np.uint8)
    cv2.putText(name, label, (6, thumb_height // 2 + 5),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    rows.append(np.concatenate([name, *frames], axis=1))
  return np.concatenate(rows, axis=0)


def write_contact_sheet(path: str, seed: int, **kwargs: int | float) -> None:
  """Writes `render_contact_sheet(seed, **kwargs)` as a PNG, atomically.

  Raises:
    ValueError: if `path` is a directory or does not end in .png (checked
      before rendering).
  """
  if os.path.isdir(path):
    raise ValueError(f"{path} is a directory; give the PNG file's path")
  if not path.lower().endswith(".png"):
    raise ValueError(f"{path}: the contact sheet is a PNG, its name must end "
                     "in .png")
  sheet = render_contact_sheet(seed, **kwargs)
  ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR),
                         [cv2.IMWRITE_PNG_COMPRESSION, 9])
  if not ok:
    raise RuntimeError("PNG encoding failed")
  fileio.write_bytes(path, png.tobytes())


def _define_flags() -> None:
  # Defined only when run as a program, so that importing this module from a
  # trainer with flags of the same names does not clash.
  flags.DEFINE_string("output_dir", None, "Dataset directory to write.")
  bound = _LOWER_BOUNDS
  flags.DEFINE_integer("clips_per_class", 40, "Clips of each class.",
                       lower_bound=bound["clips_per_class"])
  flags.DEFINE_integer("seed", 0, "Dataset seed.", lower_bound=bound["seed"])
  flags.DEFINE_string("contact_sheet", None,
                      "Also write a PNG grid of frames, one row per class.")
  flags.DEFINE_integer("num_subjects", DEFAULT_NUM_SUBJECTS,
                       "Subjects sharing the clips.",
                       lower_bound=bound["num_subjects"])
  flags.DEFINE_integer("short_side", DEFAULT_SHORT_SIDE,
                       "Every frame's shorter side in pixels, even; each "
                       "clip's aspect (4:3, 16:9, 3:4 or 9:16) sets the "
                       "longer one.", lower_bound=bound["short_side"])
  flags.DEFINE_float("fps", DEFAULT_FPS, "Frame rate.",
                     lower_bound=bound["fps"])
  flags.DEFINE_integer("num_workers", os.cpu_count() or 1,
                       "Processes rendering clips in parallel.",
                       lower_bound=bound["num_workers"])
  flags.register_validator("short_side", lambda value: value % 2 == 0,
                           message="--short_side must be even (video codecs)")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  if not values.output_dir and not values.contact_sheet:
    raise app.UsageError("give --output_dir, --contact_sheet or both")
  look = {"num_subjects": values.num_subjects,
          "short_side": values.short_side, "fps": values.fps}
  try:
    if values.output_dir:
      manifest = generate_dataset(values.output_dir, values.clips_per_class,
                                  values.seed, num_workers=values.num_workers,
                                  **look)
      logging.info("dataset ready: %s", manifest)
    if values.contact_sheet:
      write_contact_sheet(values.contact_sheet, values.seed, **look)
      logging.info("wrote %s", values.contact_sheet)
  except (ValueError, OSError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
