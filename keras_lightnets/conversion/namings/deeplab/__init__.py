"""Checkpoint namings of the deeplab family."""
