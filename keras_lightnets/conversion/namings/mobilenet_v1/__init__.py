"""Checkpoint namings of the mobilenet_v1 family."""
