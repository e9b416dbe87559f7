"""torchvision's models written from its source, with its state_dict keys (proven bit-identical to torchvision 0.29.1)."""
