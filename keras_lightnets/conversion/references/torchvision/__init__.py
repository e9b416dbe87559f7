"""torchvision's networks written from torchvision/models/*.py with its state_dict keys (checked bit-identical to torchvision 0.29.1; torchvision may not import beside torch)."""
