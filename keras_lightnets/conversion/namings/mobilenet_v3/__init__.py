"""Checkpoint namings of the mobilenet_v3 family (torchvision's classifiers and segmenters)."""
