"""The converter's entry in a checkout: `python -m convert` runs `lightnets convert`."""
