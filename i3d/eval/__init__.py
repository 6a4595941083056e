"""Evaluation and inference: metrics, reports, trained runs, classifying videos."""
