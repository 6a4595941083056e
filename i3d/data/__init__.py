"""Datasets: video sources, subject splits, the prepared cache, tf.data."""
