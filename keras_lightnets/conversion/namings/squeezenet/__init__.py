"""Checkpoint namings of the squeezenet family."""
