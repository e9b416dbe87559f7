"""PyTorch checkpoints into Keras weights, safely and without torch.

`reader` (safe reading) → `namings` (one per source naming) → `layouts` (one
per Keras layer class) → `pipeline` (read, detect naming, plan, map, parity,
write, report); `safety` holds the one-line-message and temp-file helpers.
This package never imports the model builders: the pipeline is handed the
arch's builder (`keras_lightnets.catalog.get_builder`).
"""
