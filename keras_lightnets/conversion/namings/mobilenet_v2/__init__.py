"""Checkpoint namings of the mobilenet_v2 family."""
