"""Layers and blocks: the conventions of each framework, the building blocks, and custom layers."""
