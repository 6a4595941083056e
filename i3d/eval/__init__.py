"""Evaluation and inference: metrics, reports, runs, classifying videos."""
