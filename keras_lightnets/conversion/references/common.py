"""What every reference needs: TensorFlow-style padding, and a module holding a checkpoint's tensors."""

import torch


def fixed_padding(kernel_size, dilation):
    """`(left, right, top, bottom)` padding keeping a stride-1 conv's size
    (VainF's and jfzhang95's `fixed_padding`)."""
    effective = kernel_size + (kernel_size - 1) * (dilation - 1)
    total = effective - 1
    begin = total // 2
    return (begin, total - begin, begin, total - begin)


def holding(model, tensors):
    """`model` in eval mode holding the checkpoint's `tensors` (name → numpy array).

    Every tensor of the model's state_dict must be given, and no other
    (`num_batches_tracked` aside, which the reader drops).

    Raises:
        ValueError: naming the first missing or unexpected tensor.
    """
    state = {key: torch.from_numpy(array.copy()) for key, array in tensors.items()}
    result = model.load_state_dict(state, strict=False)
    missing = [key for key in result.missing_keys if not key.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        first = f"no '{missing[0]}'" if missing else f"'{result.unexpected_keys[0]}', which it has no place for"
        raise ValueError(
            f"the reference {type(model).__name__} does not take the checkpoint: it has {first} "
            f"({len(missing)} tensors missing, {len(result.unexpected_keys)} unexpected)"
        )
    return model.eval()


def library_or_shipped(library, shipped):
    """`library()` (a model from the source library itself) if that library
    is installed, else `shipped()` (this package's reference)."""
    try:
        return library()
    except ImportError:
        return shipped()
