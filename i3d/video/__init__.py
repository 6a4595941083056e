"""Video files to model inputs: decoding and encoding, preprocessing, optical flow."""
