"""The procedural exercise-video generator: demo data, not library code."""
