"""Weights: the `.h5` format, loading into models, and the named pretrained weights."""
