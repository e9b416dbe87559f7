"""Checkpoint namings of the efficientnet_lite family."""
