"""Checkpoint namings of the shufflenet family."""
