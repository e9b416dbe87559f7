"""A hand-written mutation pass: plausible one-line bugs, each run against the quick tests.

    python bench/mutants.py                 # every mutant
    python bench/mutants.py --only dw_multiplier_order,atomic_write
    python bench/mutants.py --list
    python bench/mutants.py --baseline      # the unmutated copy must pass first

Each mutant is `(name, file, original fragment, replacement, test files)`.
The fragment must occur exactly once in the file (else the mutant is
reported "stale": the code changed under it). Every mutant is applied to a
fresh COPY of the repository in a temporary folder (the working tree is
never touched); `python -m pytest -x -q -m "not slow"` then runs there on
the test files that cover the mutated module, fastest and most targeted
first, so that a killed mutant stops early. A mutant is killed when pytest
fails (or times out); it survives when the tests pass.

Results are appended as JSON lines to `--out` (default
bench/mutants_results.jsonl), one line per mutant, and the score is printed.
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

CONV = "keras_lightnets/conversion/"
CONVERT_TESTS = ["tests/test_layouts.py", "tests/test_gates.py", "tests/test_convert.py"]
READER_TESTS = ["tests/test_reader.py", "tests/test_convert.py"]
PRE_TESTS = ["tests/test_preprocessing.py"]
# The blocks are covered by many slow files; their mutants run the tests aimed
# at the mutated code (a narrower selection than the quick subset, so a mutant
# that survives here might still be killed by the whole subset, never the reverse).
MN = "tests/test_mobilenet.py::"
SQ = "tests/test_squeezenet_shufflenet.py::"
DL = "tests/test_deeplab.py::"
TORCH_PAD = MN + "test_torch_style_pads_symmetrically_and_uses_pytorch_epsilon"
KERAS_APPS = MN + "test_keras_applications_weight_file_gives_keras_outputs"
DM2_CLI = "tests/test_layouts.py::test_cli_converts_seed_v1_with_depth_multiplier_2"
SQ_CLI = SQ + "test_cli_conversion_reproduces_pytorch"
DL_CLI = DL + "test_conversion_reproduces_pytorch_deeplab"
RESIZE = DL + "test_bilinear_resize_matches_torch_interpolate"
RESIZE_DYNAMIC = "tests/test_layouts.py::test_bilinear_resize_with_unknown_sizes_matches_torch"
TFLITE = "keras_lightnets/tflite.py"
TFLITE_TESTS = ["tests/test_tflite.py", "tests/test_inference.py::test_family_folded_matches_keras"]
AUTO = "tests/test_inference.py::test_auto_runs_static_classifiers_on_tflite_and_free_size_deeplab_on_tf"
WARM_DEMO = "tests/test_demo.py::test_warm_cache_runs_without_tensorflow_and_never_serves_a_stale_flatbuffer"

# (name, file, original fragment, replacement, tests)
MUTANTS = [
    # ------------------------------------------------------------ converter: layouts
    ("dw_multiplier_order", CONV + "layouts.py",
     "weight.reshape(channels, multiplier, *weight.shape[2:]).transpose(2, 3, 0, 1)",
     "weight.reshape(multiplier, channels, *weight.shape[2:]).transpose(2, 3, 1, 0)", CONVERT_TESTS),
    ("dw_swap_kh_kw", CONV + "layouts.py",
     "weight.reshape(channels, multiplier, *weight.shape[2:]).transpose(2, 3, 0, 1)",
     "weight.reshape(channels, multiplier, *weight.shape[2:]).transpose(3, 2, 0, 1)", ["tests/test_layouts.py"]),
    ("conv_swap_kh_kw", CONV + "layouts.py",
     "arrays = [weight.transpose(2, 3, 1, 0)]",
     "arrays = [weight.transpose(3, 2, 1, 0)]", ["tests/test_layouts.py"]),
    ("dense_reshape_not_transpose", CONV + "layouts.py",
     "arrays = [weight.T]",
     "arrays = [weight.reshape(weight.shape[::-1])]", ["tests/test_layouts.py"]),
    ("bn_mean_var_swapped", CONV + "layouts.py",
     'fetch("running_mean"), fetch("running_var")]',
     'fetch("running_var"), fetch("running_mean")]', ["tests/test_layouts.py"]),
    ("bn_gamma_beta_swapped", CONV + "layouts.py",
     'return [fetch("weight"), fetch("bias"),',
     'return [fetch("bias"), fetch("weight"),', ["tests/test_layouts.py"]),
    # ------------------------------------------------------------ converter: pipeline
    ("parity_atol_disabled", CONV + "pipeline.py",
     "PARITY_ATOL = 1e-4", "PARITY_ATOL = 1e9", ["tests/test_gates.py"]),
    ("parity_top5_ignored", CONV + "pipeline.py",
     'failed = not measured["top5_identical"]', "failed = False", ["tests/test_gates.py"]),
    ("parity_or_becomes_and", CONV + "pipeline.py",
     'if failed or measured["max_abs_diff"] > PARITY_ATOL:',
     'if failed and measured["max_abs_diff"] > PARITY_ATOL:', ["tests/test_gates.py"]),
    ("parity_weights_not_assigned", CONV + "pipeline.py",
     "weights = layer_weights(model, mapped, assign=reference_fn is not None)",
     "weights = layer_weights(model, mapped, assign=False)", ["tests/test_gates.py"]),
    ("unset_layers_allowed", CONV + "pipeline.py",
     "if (unused or unset) and not allow_partial:",
     "if unused and not allow_partial:", ["tests/test_gates.py::test_completeness_refuses_unused_tensors_and_unset_layers", "tests/test_convert.py::test_unused_tensors_refused_unless_allow_partial"]),
    ("no_overwrite_check", CONV + "pipeline.py",
     "if os.path.exists(out) and not force:", "if False:", ["tests/test_convert.py::test_class_count_check_existing_output_and_force"]),
    ("write_before_parity", CONV + "pipeline.py",
     '    parity, parity_note = None, "not run (--no-check)"\n',
     '    h5format.write_weights(out, weights, make_record(spec, kwargs, naming, path), overwrite=force)\n'
     '    parity, parity_note = None, "not run (--no-check)"\n', ["tests/test_gates.py::test_gate_passes_the_weights_and_refuses_one_perturbed_weight"]),
    # ------------------------------------------------------------ converter: h5 writing
    # h5format.write_weights writes through safety.write_atomically (since the 17:30 refactor)
    ("write_not_atomic", CONV + "safety.py",
     "    temp = temp_path_for(path)\n", "    temp = path\n",
     ["tests/test_gates.py::test_force_killed_while_writing_keeps_the_old_file",
      "tests/test_convert.py::test_interrupted_write_leaves_no_file"]),
    ("temp_left_behind", CONV + "safety.py",
     "                os.unlink(temp)\n", "                pass\n",
     ["tests/test_convert.py::test_interrupted_write_leaves_no_file"]),
    # ------------------------------------------------------------ converter: namings
    ("seed_v1_multiplier_fixed", CONV + "namings/seed_mobilenet_v1.py",
     '"depth_multiplier": tensors["model.1.0.weight"].shape[0] // stem,',
     '"depth_multiplier": 1,', [DM2_CLI]),
    ("seed_v1_relu6", CONV + "namings/seed_mobilenet_v1.py",
     '"activation": "relu",', '"activation": "relu6",', [DM2_CLI, "tests/test_convert.py::test_cli_conversion_reproduces_pytorch"]),
    ("v2_alpha_without_int", CONV + "namings/_mobilenet_v2.py",
     "and make_divisible(int(320 * alpha), 8) == last_block_channels",
     "and make_divisible(320 * alpha, 8) == last_block_channels", ["tests/test_convert.py::test_cli_conversion_reproduces_pytorch"]),
    # ------------------------------------------------------------ converter: reader
    ("reader_orig_mod_prefix", CONV + "reader/assemble.py",
     '_PREFIXES = ("module.", "_orig_mod.")', '_PREFIXES = ("module.",)', READER_TESTS),
    ("reader_keeps_num_batches", CONV + "reader/assemble.py",
     'and k.rsplit(".", 1)[-1] != "num_batches_tracked"', "", READER_TESTS),
    ("reader_bf16_shift", CONV + "reader/assemble.py",
     "array <<= 16", "array <<= 8", READER_TESTS),
    ("reader_extent_off_by_one", CONV + "reader/tensors.py",
     "if last >= storage.numel:", "if last > storage.numel:", READER_TESTS),
    ("reader_negate_ignored", CONV + "reader/assemble.py",
     "    if ref.negate:\n        np.negative(array, out=array)",
     "    if False:\n        np.negative(array, out=array)", READER_TESTS),
    # ------------------------------------------------------------ blocks
    ("torch_padding_bottom_right", "keras_lightnets/blocks.py",
     "padding = ((total // 2, total // 2), (total // 2, total // 2))",
     "padding = ((total // 2 - 1, total // 2), (total // 2 - 1, total // 2))",
     [TORCH_PAD, DM2_CLI]),
    ("tf_bottom_right_top_left", "keras_lightnets/blocks.py",
     "padding = ((total // 2 - 1, total // 2), (total // 2 - 1, total // 2))",
     "padding = ((total // 2, total // 2 - 1), (total // 2, total // 2 - 1))",
     [KERAS_APPS]),
    ("tf_padding_ignores_odd", "keras_lightnets/blocks.py",
     "(total // 2 - (1 if size is None or size % 2 == 0 else 0), total // 2)",
     "(total // 2 - 1, total // 2)",
     [KERAS_APPS, "tests/test_efficientnet_lite.py::test_random_weights_through_cli"]),
    ("torch_bn_epsilon_1e-3", "keras_lightnets/blocks.py",
     'TORCH = Conventions("torch", "torch", bn_epsilon=1e-5, bn_momentum=0.9)',
     'TORCH = Conventions("torch", "torch", bn_epsilon=1e-3, bn_momentum=0.9)',
     [TORCH_PAD, DM2_CLI]),
    ("relu6_unbounded", "keras_lightnets/blocks.py",
     "return layers.ReLU(6.0, name=name)(x)", "return layers.ReLU(name=name)(x)",
     [KERAS_APPS, "tests/test_convert.py::test_cli_conversion_reproduces_pytorch"]),
    ("residual_skipped_when_dilated", "keras_lightnets/blocks.py",
     "    if stride == 1 and in_channels == filters:",
     "    if stride == 1 and in_channels == filters and dilation == 1:", [DL_CLI]),
    ("shuffle_identity", "keras_lightnets/blocks.py",
     "return ops.reshape(ops.swapaxes(grouped, -1, -2), shape)", "return ops.reshape(grouped, shape)",
     [SQ + "test_channel_shuffle_matches_torchvision_order", SQ_CLI]),
    ("split_halves_swapped", "keras_lightnets/blocks.py",
     "return ops.split(x, 2, axis=-1)", "return ops.split(x, 2, axis=-1)[::-1]",
     [SQ + "test_channel_split_gives_torch_chunks", SQ_CLI]),
    ("max_pool_no_ceil", "keras_lightnets/blocks.py",
     "extra = strides - 1 if ceil_mode else 0", "extra = 0", [SQ + "test_torch_max_pool_matches_pytorch_at_every_size", SQ_CLI]),
    ("max_pool_zero_pad", "keras_lightnets/blocks.py",
     'return ops.pad(x, pad, constant_values=float("-inf"))', "return ops.pad(x, pad, constant_values=0.0)",
     [SQ + "test_torch_max_pool_matches_pytorch_at_every_size", SQ_CLI]),
    ("fire_concat_order", "keras_lightnets/blocks.py",
     '((expand1x1, 1, "expand1x1"), (expand3x3, 3, "expand3x3"))',
     '((expand3x3, 3, "expand3x3"), (expand1x1, 1, "expand1x1"))', [SQ_CLI]),
    ("aspp_rates_ignored", "keras_lightnets/blocks.py",
     'conv(x, 3, f"{name}_conv{i}", rate) for i, rate', 'conv(x, 3, f"{name}_conv{i}", 1) for i, rate',
     [DL_CLI]),
    # ------------------------------------------------------------ resize
    ("align_corners_as_half_pixel", "keras_lightnets/resize.py",
     "src = dst * ((in_f - 1.0) / ops.maximum(out_f - 1.0, 1.0))", "src = dst * (in_f / out_f)",
     [RESIZE, RESIZE_DYNAMIC, DL_CLI]),
    ("half_pixel_unclamped", "keras_lightnets/resize.py",
     "src = ops.maximum((dst + 0.5) * (in_f / out_f) - 0.5, 0.0)",
     "src = (dst + 0.5) * (in_f / out_f) - 0.5", [RESIZE, RESIZE_DYNAMIC, DL_CLI]),
    ("half_pixel_no_offset", "keras_lightnets/resize.py",
     "src = ops.maximum((dst + 0.5) * (in_f / out_f) - 0.5, 0.0)",
     "src = ops.maximum(dst * (in_f / out_f), 0.0)", [RESIZE, RESIZE_DYNAMIC, DL_CLI]),
    # ------------------------------------------------------------ image
    ("alpha_on_black", "keras_lightnets/image.py",
     "def _to_rgb(img, background=(255, 255, 255)):", "def _to_rgb(img, background=(0, 0, 0)):",
     ["tests/test_image.py"]),
    ("sixteen_bit_by_256", "keras_lightnets/image.py",
     "values = values / 257.0", "values = values / 256.0", ["tests/test_image.py"]),
    ("exif_ignored", "keras_lightnets/image.py",
     "img = ImageOps.exif_transpose(img)", "img = img", ["tests/test_image.py"]),
    ("crop_top_left", "keras_lightnets/image.py",
     "left = (width - side) // 2", "left = 0", ["tests/test_image.py"]),
    ("bomb_warning_ignored", "keras_lightnets/image.py",
     'warnings.simplefilter("error", Image.DecompressionBombWarning)',
     'warnings.simplefilter("ignore", Image.DecompressionBombWarning)',
     ["tests/test_preprocessing.py::test_image_just_over_the_pixel_limit_is_refused_too", "tests/test_image.py"]),
    # ------------------------------------------------------------ imagenet preprocessing
    ("torch_mode_bgr", "keras_lightnets/imagenet.py",
     "return (x / 255.0 - IMAGENET_MEAN) / IMAGENET_STD",
     "return (x[..., ::-1] / 255.0 - IMAGENET_MEAN) / IMAGENET_STD", PRE_TESTS),
    ("torch_std_reversed", "keras_lightnets/imagenet.py",
     'IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype="float32")',
     'IMAGENET_STD = np.array([0.225, 0.224, 0.229], dtype="float32")', PRE_TESTS),
    ("caffe_mode_rgb", "keras_lightnets/imagenet.py",
     "return x[..., ::-1] - CAFFE_MEAN_BGR", "return x - CAFFE_MEAN_BGR", PRE_TESTS),
    ("caffe_mean_rgb_order", "keras_lightnets/imagenet.py",
     'CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype="float32")',
     'CAFFE_MEAN_BGR = np.array([123.68, 116.779, 103.939], dtype="float32")', PRE_TESTS),
    ("tf_mode_by_128", "keras_lightnets/imagenet.py",
     "return x / 127.5 - 1.0", "return x / 128.0 - 1.0", PRE_TESTS),
    ("lite_mode_127_5", "keras_lightnets/imagenet.py",
     "return (x - 127.0) / 128.0", "return (x - 127.5) / 127.5", PRE_TESTS),
    ("bgr_mode_rgb", "keras_lightnets/imagenet.py",
     "return x[..., ::-1].copy()", "return x.copy()", PRE_TESTS),
    ("unit_mode_bgr", "keras_lightnets/imagenet.py",
     "        return x / 255.0\n", "        return x[..., ::-1] / 255.0\n", PRE_TESTS),
    ("decode_lowest_first", "keras_lightnets/imagenet.py",
     'order = np.argsort(-row, kind="stable")[:top]', 'order = np.argsort(row, kind="stable")[:top]',
     PRE_TESTS),
    # ------------------------------------------------------------ TFLite runtime, Predictor, the demo's cache
    ("tflite_wrong_output_index", TFLITE,
     'self.input_details["index"], self.output_details["index"])',
     'self.input_details["index"], self.output_details["index"] - 1)', TFLITE_TESTS),
    ("tflite_batch_not_resized", TFLITE,
     '        interpreter.resize_tensor_input(self.input_details["index"], list(shape), strict=True)\n', "",
     TFLITE_TESTS),
    ("tflite_interpreters_unbounded", TFLITE,
     "while len(self._interpreters) > self.cache_size:", "while len(self._interpreters) > 99:", TFLITE_TESTS),
    ("tflite_variables_not_frozen", TFLITE,
     "converter.experimental_lower_to_saved_model = False", "converter.experimental_lower_to_saved_model = True",
     ["tests/test_tflite.py", "tests/test_inference.py::test_sequential_uint8_and_subclassed_models"]),
    ("compiled_bytes_unchecked", TFLITE,
     'if hashlib.sha256(content).hexdigest()[:_DIGEST_HEX] != name[len(prefix):-len(".tflite")]:', "if False:",
     ["tests/test_tflite.py"]),
    ("compiled_key_without_weights", TFLITE,
     'return f"{weights_digest[:_DIGEST_HEX]}-{height}x{width}-{__version__}-"',
     'return f"{height}x{width}-{__version__}-"', ["tests/test_tflite.py", WARM_DEMO]),
    ("compiled_input_unchecked", TFLITE,
     'if runner.input_shape != (None, *size, 3) or runner.input_details["dtype"] != np.float32:', "if False:",
     ["tests/test_tflite.py"]),
    ("predictor_auto_never_tflite", "keras_lightnets/inference.py",
     'if runtime == "auto" and not (tensorflow and single and shape is not None and not _tensorflow_sees_a_gpu()):',
     'if runtime == "auto":', [AUTO]),
    ("predictor_auto_tflite_for_free_sizes", "keras_lightnets/inference.py",
     "tensorflow and single and shape is not None and not", "tensorflow and single and not", [AUTO]),
    ("demo_imports_tensorflow_first", "demo.py",
     "        request = check_request(args)  # fail fast, before TensorFlow and the model",
     "        import_tensorflow_quietly()\n        request = check_request(args)",
     ["tests/test_demo.py::test_bad_input_is_reported_before_tensorflow_is_imported"]),
    ("demo_compiled_cache_unused", "demo.py",
     "runner = load_compiled(weights, size, record[\"arch\"], classes, weights_digest=digest) if size else None", "runner = None", [WARM_DEMO]),
]


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
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--baseline", action="store_true", help="run the unmutated copy's tests too")
    parser.add_argument("--tests", help="comma-separated test files/node ids instead of each mutant's own")
    parser.add_argument("--timeout", type=float, default=1200)
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "mutants_results.jsonl"))
    args = parser.parse_args(argv)
    names = [m[0] for m in MUTANTS]
    assert len(set(names)) == len(names), "duplicate mutant names"
    if args.list:
        for name, path, *_ in MUTANTS:
            print(f"{name:32s} {path}")
        return 0
    chosen = MUTANTS
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - set(names)
        if unknown:
            raise SystemExit(f"unknown mutants: {', '.join(sorted(unknown))}")
        by_name = {m[0]: m for m in MUTANTS}
        chosen = [by_name[n] for n in dict.fromkeys(args.only.split(","))]  # in the order given
    if args.tests:
        chosen = [(*m[:4], args.tests.split(",")) for m in chosen]

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
            shutil.rmtree(root)
            record = {"name": name, "file": path, "outcome": outcome, "seconds": round(seconds),
                      "tests": tests, "tail": tail, "when": time.strftime("%H:%M:%S")}
            results.append(record)
            with open(args.out, "a", encoding="utf8") as f:
                f.write(json.dumps(record) + "\n")
            print(f"{outcome:9s} {name:32s} {seconds:5.0f} s  {tail[-160:]}", flush=True)

    scored = [r for r in results if r["outcome"] in ("killed", "survived")]
    killed = sum(r["outcome"] == "killed" for r in scored)
    print(f"\nscore: {killed}/{len(scored)} killed"
          + (f" ({100 * killed / len(scored):.0f} %)" if scored else ""))
    for r in results:
        if r["outcome"] != "killed":
            print(f"  {r['outcome']}: {r['name']} ({r['file']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
