r"""Procedural synthetic exercise videos: the built-in demo dataset.

A shaded 3D person does one of the classes in `labels.EXERCISE_CLASSES` and a
perspective camera films it. Each class is a pair of keyframes (the rest pose
and the peak of a repetition) over one of four exercise rigs, and its form
fault is a kinematic rule that holds on the generated skeleton: the hips go
below the knees in squat_correct and stop above them in squat_not-low, the feet
leave the floor in crunch_heels-up, and so on. Everything else varies with the
seed: the subject's proportions and clothes (one subject id fixes both), the
camera angle, distance and shake, the facing direction, the room, the
lighting, the noise, the rep speed, the phase at the start and the clip
length.

Usage:

  python3 -m i3d_demo.synthetic --output_dir=data/synthetic --clips_per_class=20 \
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
from typing import Callable, Mapping, Sequence

from absl import app
from absl import flags
from absl import logging
import cv2
import numpy as np

from i3d import fileio
from i3d import labels

DEFAULT_WIDTH = 224
DEFAULT_HEIGHT = 168
DEFAULT_FPS = 25.0
DEFAULT_NUM_SUBJECTS = 10
MANIFEST_NAME = "manifest.csv"
SETTINGS_NAME = "synthetic.json"
# Bump when a change alters the pixels a given seed produces, so that a rerun
# over an older output refuses instead of mixing two generators.
GENERATOR_VERSION = 3  # 3: butt-up and sagging push-ups share depths.
# The least value of each numeric argument of `generate_dataset` (and flag).
_LOWER_BOUNDS = {"clips_per_class": 1, "seed": 0, "num_subjects": 1,
                 "width": 16, "height": 16, "fps": 1, "num_workers": 1}

_MIN_SECONDS, _MAX_SECONDS = 2.4, 4.0
# Rep periods stay shorter than the shortest clip so that every clip shows a
# peak, and short enough that a 32-frame training window mostly sees one.
_MIN_REP_SECONDS, _MAX_REP_SECONDS = 1.1, 1.8
# Fractions of the frame the whole motion may fill. The width limit keeps the
# person inside the centre crop that training takes from 4:3 frames.
_MAX_FILL_HEIGHT, _MAX_FILL_WIDTH = 0.68, 0.62
_SIDES = (("l", -1.0), ("r", 1.0))
# Fixed-point bits for OpenCV drawing, so that limbs move by sub-pixel steps.
_SHIFT = 4
_ONE = 1 << _SHIFT

Skeleton = dict[str, np.ndarray]
Range = float | tuple[float, float]


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
  """
  views: tuple[tuple[float, float], ...] = ((-35.0, 35.0),)
  elevations: tuple[tuple[float, float], ...] = ((5.0, 18.0),)
  distances: tuple[tuple[float, float], ...] = ((3.0, 5.0),)
  heights: tuple[tuple[float, float], ...] = ((1.55, 1.95),)
  girths: tuple[tuple[float, float], ...] = ((0.9, 1.2),)


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
    scene_seed: seeds the room, lighting, shake and noise.
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
      angle) and `feet_lift` (ankle height above resting, in body heights).
    hands_on_head: whether the hands hold the back of the head; otherwise the
      arms reach towards the knees.

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
_LYING = {"curl": (0.0, 3.0), "neck_flex": (0.0, 8.0), "knee": (80.0, 95.0),
          "feet_lift": 0.0}
_CRUNCH_PEAK = {"curl": (38.0, 46.0), "neck_flex": (15.0, 25.0)}
_crunch_reaching = functools.partial(_crunch, hands_on_head=False)

# `thigh_rise` is the knee-to-hip angle: past 180 the hip is below the knee.
CLASSES: Mapping[str, ExerciseClass] = {
    "squat_correct": ExerciseClass(_squat, _STANDING, {
        "shank": (50.0, 56.0), "thigh_rise": (188.0, 198.0),
        "trunk": (50.0, 58.0), "neck_flex": (-25.0, -15.0), **_ARMS_FORWARD}),
    "squat_not-low": ExerciseClass(_squat, _STANDING, {
        "shank": (62.0, 68.0), "thigh_rise": (140.0, 148.0),
        "trunk": (62.0, 70.0), "neck_flex": (-20.0, -10.0), **_ARMS_FORWARD}),
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
    # body line, not how low the chest goes, tells them apart: when the sag
    # was always shallower than the pike, real sagging push-ups that went
    # low were called butt-up.
    "push-up_butt-up": ExerciseClass(
        _push_up, {**_PUSH_UP_REST, "pike": (26.0, 34.0)},
        {"lift": _LOW_PUSH_UP}),
    "push-up_not-straight": ExerciseClass(
        _push_up, {**_PUSH_UP_REST, "pike": (-18.0, -15.0)},
        {"lift": _LOW_PUSH_UP}),
    "crunch_correct": ExerciseClass(_crunch_reaching, _LYING, _CRUNCH_PEAK),
    "crunch_heels-up": ExerciseClass(
        _crunch_reaching, {**_LYING, "feet_lift": (0.14, 0.17)},
        {**_CRUNCH_PEAK, "feet_lift": (0.24, 0.28)}),
    "crunch_not-enough": ExerciseClass(
        _crunch_reaching, _LYING,
        {"curl": (8.0, 12.0), "neck_flex": (8.0, 14.0)}),
    "crunch_bad-hands": ExerciseClass(
        functools.partial(_crunch, hands_on_head=True), _LYING,
        {"curl": (34.0, 42.0), "neck_flex": (35.0, 45.0)}),
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
  lengths = {name: height * fraction * rng.uniform(0.95, 1.05)
             for name, fraction in fractions.items()}
  girth = _sample_union(rng, conditions.girths)
  radius_fractions = {"upper_arm": 0.036, "forearm": 0.03, "hand": 0.03,
                      "thigh": 0.055, "shank": 0.042, "foot": 0.025,
                      "neck": 0.03, "hips": 0.08, "torso_depth": 0.08,
                      "head": 0.065}
  rigid = ("head", "hand", "foot")  # Parts that girth does not thicken.
  radii = {name: height * fraction * (1.0 if name in rigid else girth)
           for name, fraction in radius_fractions.items()}
  skin = _pick(rng, _SKIN_TONES)
  shirt = _sample_colour(rng, (0.5, 1.0), (0.45, 0.95))
  bottoms = _sample_colour(rng, (0.2, 0.9), (0.15, 0.6))
  long_sleeves, long_legs = rng.random(2) < 0.5
  colours = {
      "head": skin, "neck": skin, "hand": skin,
      "hair": _pick(rng, _HAIR_COLOURS),
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
  return float(value)


def sample_clip(label: str, clip_index: int, seed: int, *,
                num_subjects: int = DEFAULT_NUM_SUBJECTS,
                width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT,
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
    width: frame width in pixels.
    height: frame height in pixels.
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
      fill=float(rng.uniform(0.88, 1.0)),
      offset=(float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.05, 0.05))),
      width=width,
      height=height,
      scene_seed=int(rng.integers(2**31)),
  )


def _azimuth(view: float, left_side: bool) -> float:
  """The camera azimuth (see `Clip`) of a view angle from one side."""
  # Azimuth 90 is in front of the person, between the two side views.
  return 180.0 - view if left_side else view


def rep_phase(clip: Clip) -> np.ndarray:
  """How far into its rep each frame is, (T,): 0 at rest, 1 at the peak."""
  seconds = np.arange(clip.num_frames) / clip.fps
  cycles = seconds / clip.rep_seconds + clip.start_phase
  return 0.5 - 0.5 * np.cos(2 * np.pi * cycles)


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


def _draw_floor(rng: np.random.Generator, image: np.ndarray, camera: _Camera,
                ground: np.ndarray, body_height: float) -> None:
  """Paints a boarded floor up to where it meets the wall behind the person."""
  away, across = _ground_axes(camera)
  colour = np.array(_sample_colour(rng, (0.05, 0.4), (0.25, 0.7)))
  texture = colour * (1 + 0.1 * _smooth_noise(rng, image.shape[:2], 12)[
      ..., None])
  # Boards run parallel to the wall; perspective spaces them out.
  for distance in np.arange(rng.uniform(-3.0, -2.5), 3.0,
                            rng.uniform(0.3, 0.6)):
    line = ground + distance * away
    ends = camera.project(np.stack([line - 20 * across, line + 20 * across]))
    cv2.line(texture, _fixed(ends[0][0]), _fixed(ends[0][1]),
             tuple(0.8 * colour), 1, cv2.LINE_AA, _SHIFT)
  edge = ground + rng.uniform(0.9, 1.7) * body_height * away
  edge_pixels = camera.project(np.stack([edge - 20 * across,
                                         edge + 20 * across]))[0]
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
  corners = camera.project(np.array([
      [back, 0.0, half_width], [front, 0.0, half_width],
      [front, 0.0, -half_width], [back, 0.0, -half_width]]))[0]
  cv2.fillConvexPoly(image, (corners * _ONE).round().astype(np.int32), colour,
                     cv2.LINE_AA, _SHIFT)


def _draw_bar(image: np.ndarray, camera: _Camera, bar: np.ndarray,
              body_height: float) -> None:
  """A wall-mounted pull-up bar.

  Its far end is held by a bracket on a post behind the person, so that no
  support crosses the body.
  """
  away, _ = _ground_axes(camera)
  far = bar + _lateral(0.5 * body_height * np.sign(away[2]))
  near = bar - (far - bar)
  bracket = far - np.array([0.45 * body_height, 0.0, 0.0])
  base = bracket * np.array([1.0, 0.0, 1.0])
  for start, end in ((base, bracket), (bracket, far), (far, near)):
    (a, b), depths = camera.project(np.stack([start, end]))
    radius = 0.02 * body_height * camera.scale / depths.mean()
    _draw_capsule(image, a, b, radius, (150, 150, 160), np.array([0.0, -1.0]))


def _render_background(rng: np.random.Generator, clip: Clip, camera: _Camera,
                       skeleton: Skeleton, margin: int) -> np.ndarray:
  """The room as uint8 RGB, `margin` pixels larger on every side for shake."""
  size = (clip.height + 2 * margin, clip.width + 2 * margin)
  camera = dataclasses.replace(camera, centre=camera.centre + margin)
  # Greyer than the clothes, so that the person stands out.
  wall = np.array(_sample_colour(rng, (0.0, 0.3), (0.35, 0.85)))
  image = wall * (1 + 0.12 * _smooth_noise(rng, size, 6)[..., None])
  ground = skeleton["pelvis"][0] * np.array([1.0, 0.0, 1.0])
  _draw_floor(rng, image, camera, ground, clip.body.height)
  if rng.random() < 0.5:
    _draw_mat(rng, image, camera, skeleton, clip.body.height)
  if "bar" in skeleton:
    _draw_bar(image, camera, skeleton["bar"][0], clip.body.height)
  # Light falls off across the room from a random side.
  ys, xs = np.mgrid[0:size[0], 0:size[1]]
  angle = rng.uniform(0, 2 * np.pi)
  ramp = (np.cos(angle) * xs + np.sin(angle) * ys) / max(size)
  image *= (rng.uniform(0.8, 1.1) + rng.uniform(0.1, 0.3) * ramp)[..., None]
  return np.clip(image, 0, 255).astype(np.uint8)


def _camera_shake(rng: np.random.Generator, num_frames: int,
                  amplitude: float) -> np.ndarray:
  """Smooth per-frame integer pixel offsets, shape (T, 2)."""
  walk = np.cumsum(rng.normal(size=(num_frames + 8, 2)), axis=0)
  walk = cv2.blur(walk, (1, 9))[4:-4]
  walk -= walk.mean(axis=0)
  walk *= amplitude / max(np.abs(walk).max(), 1e-6)
  return np.round(walk).astype(int)


def render_clip(clip: Clip) -> np.ndarray:
  """Renders a clip.

  Args:
    clip: from `sample_clip`.

  Returns:
    The frames, uint8 RGB of shape (T, height, width, 3).
  """
  rng = np.random.default_rng(clip.scene_seed)
  skeleton = clip_skeleton(clip)
  camera = _fit_camera(clip, skeleton)
  shake = _camera_shake(rng, clip.num_frames,
                        rng.uniform(0.5, 0.02 * clip.height))
  margin = int(np.abs(shake).max()) + 1
  background = _render_background(rng, clip, camera, skeleton, margin)
  light = np.array([rng.choice([-0.5, 0.5]), -0.85])
  noise_sigma = rng.uniform(2.0, 6.0)
  # A few noise images reused in random order cost far less than one a frame.
  noise_bank = (rng.normal(0, noise_sigma, (4, clip.height, clip.width, 3))
                .round().astype(np.int16))
  frames = np.empty((clip.num_frames, clip.height, clip.width, 3), np.uint8)
  for t in range(clip.num_frames):
    dx, dy = shake[t]
    frame = background[margin + dy:margin + dy + clip.height,
                       margin + dx:margin + dx + clip.width].copy()
    shaken = dataclasses.replace(camera, centre=camera.centre - shake[t])
    _draw_person(frame, shaken, clip.body,
                 {name: point[t] for name, point in skeleton.items()}, light)
    noisy = frame.astype(np.int16) + noise_bank[rng.integers(len(noise_bank))]
    frames[t] = np.clip(noisy, 0, 255)
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
    if previous != settings:
      changed = ", ".join(
          f"{key} {previous.get(key)!r} there, {settings.get(key)!r} now"
          for key in sorted(set(previous) | set(settings))
          if previous.get(key) != settings.get(key))
      raise ValueError(
          f"{output_dir} holds clips made with other settings ({changed}); "
          "delete it (and the cache prepared from it) to regenerate, or use "
          "another directory")
  else:
    fileio.write_json(path, dict(settings))


def generate_dataset(output_dir: str, clips_per_class: int, seed: int, *,
                     num_subjects: int = DEFAULT_NUM_SUBJECTS,
                     width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT,
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
    width: frame width in pixels.
    height: frame height in pixels.
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
           "num_subjects": num_subjects, "width": width, "height": height,
           "fps": fps, "num_workers": num_workers}
  for name, least in _LOWER_BOUNDS.items():
    if given[name] < least:
      raise ValueError(f"{name} must be at least {least}, got {given[name]}")
  if width % 2 or height % 2:
    raise ValueError(f"width and height must be even, as video codecs want; "
                     f"got {width}x{height}")
  settings = {"generator_version": GENERATOR_VERSION, "seed": seed,
              "num_subjects": num_subjects, "width": width, "height": height,
              "fps": fps,
              # Through JSON, so that it compares equal to a reread copy.
              "conditions": json.loads(json.dumps(
                  dataclasses.asdict(conditions)))}
  os.makedirs(output_dir, exist_ok=True)
  _check_settings(output_dir, settings)
  clips = [sample_clip(label, index, seed, num_subjects=num_subjects,
                       width=width, height=height, fps=fps,
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


def render_contact_sheet(seed: int, *, columns: int = 6,
                         thumbnail_height: int = 96,
                         num_subjects: int = DEFAULT_NUM_SUBJECTS,
                         width: int = DEFAULT_WIDTH,
                         height: int = DEFAULT_HEIGHT,
                         fps: float = DEFAULT_FPS,
                         label_width: int = 170) -> np.ndarray:
  """A grid of frames, one row per class, each spanning one repetition.

  Args:
    seed: the dataset seed.
    columns: frames per row.
    thumbnail_height: frames taller than this are shrunk to it.
    num_subjects: as for `generate_dataset`.
    width: frame width in pixels.
    height: frame height in pixels.
    fps: frame rate.
    label_width: width of the class-name column in pixels.

  Returns:
    A uint8 RGB image with one row of `columns` frames per class after a
    column of class names.
  """
  thumb_height = min(height, thumbnail_height)
  thumb_width = int(round(width * thumb_height / height))
  rows = []
  for row, label in enumerate(CLASSES):
    # Row i shows clip i of its class (as in a dataset of the same seed):
    # a different subject on each row.
    clip = sample_clip(label, row, seed, num_subjects=num_subjects,
                       width=width, height=height, fps=fps)
    shown = render_clip(clip)[_peak_centred_frames(clip, columns)]
    frames = [cv2.resize(frame, (thumb_width, thumb_height),
                         interpolation=cv2.INTER_AREA) for frame in shown]
    name = np.full((thumb_height, label_width, 3), 255, np.uint8)
    cv2.putText(name, label, (6, thumb_height // 2 + 5),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    rows.append(np.concatenate([name, *frames], axis=1))
  return np.concatenate(rows, axis=0)


def write_contact_sheet(path: str, seed: int, **kwargs: int | float) -> None:
  """Writes `render_contact_sheet(seed, **kwargs)` as a PNG, atomically."""
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
  flags.DEFINE_integer("clips_per_class", 20, "Clips of each class.",
                       lower_bound=bound["clips_per_class"])
  flags.DEFINE_integer("seed", 0, "Dataset seed.", lower_bound=bound["seed"])
  flags.DEFINE_string("contact_sheet", None,
                      "Also write a PNG grid of frames, one row per class.")
  flags.DEFINE_integer("num_subjects", DEFAULT_NUM_SUBJECTS,
                       "Subjects sharing the clips.",
                       lower_bound=bound["num_subjects"])
  flags.DEFINE_integer("width", DEFAULT_WIDTH, "Frame width in pixels, even.",
                       lower_bound=bound["width"])
  flags.DEFINE_integer("height", DEFAULT_HEIGHT,
                       "Frame height in pixels, even.",
                       lower_bound=bound["height"])
  flags.DEFINE_float("fps", DEFAULT_FPS, "Frame rate.",
                     lower_bound=bound["fps"])
  flags.DEFINE_integer("num_workers", os.cpu_count() or 1,
                       "Processes rendering clips in parallel.",
                       lower_bound=bound["num_workers"])
  for name in ("width", "height"):
    flags.register_validator(name, lambda value: value % 2 == 0,
                             message=f"--{name} must be even (video codecs)")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  if not values.output_dir and not values.contact_sheet:
    raise app.UsageError("give --output_dir, --contact_sheet or both")
  look = {"num_subjects": values.num_subjects, "width": values.width,
          "height": values.height, "fps": values.fps}
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
