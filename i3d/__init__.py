"""i3d-exercise: two-stream Inflated 3D ConvNets in Sonnet 2 for exercise-form videos."""

__version__ = "0.1.0"
