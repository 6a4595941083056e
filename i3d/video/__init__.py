"""Video files to model inputs: decoding, preprocessing, optical flow."""
