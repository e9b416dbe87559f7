"""Where a model's time goes, per TensorFlow op after Grappler's rewrites.

    python bench/profile_ops.py [--size 512] [--rounds 10]

Freezes `Predictor`'s graph (and, for comparison, the unfolded Keras
model's), runs it in a `tf.compat.v1.Session` with full tracing and sums
each op's time over the rounds. Times are the kernels' own (two inter-op
threads may overlap them), so the column sums approach the wall time only
roughly. Not a test.
"""

import argparse
import collections
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_lightnets.quiet import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2,  # noqa: E402
)

import keras_lightnets as kl  # noqa: E402
from keras_lightnets.runtime.folding import fold_batchnorm  # noqa: E402


def op_times(model, x, rounds):
    """`({op type: ms per run}, {node: (op type, ms per run)}, wall ms)` of `model` on `x`."""
    spec = tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32)
    concrete = tf.function(lambda t: model(t, training=False)).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(concrete)
    graph_def = frozen.graph.as_graph_def()
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    source = frozen.inputs[0].name
    target = frozen.outputs[0].name
    by_type = collections.Counter()
    by_node = {}
    walls = []
    import time

    with tf.compat.v1.Session(graph=graph) as session:
        for _ in range(3):
            session.run(target, {source: x})
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
        for _ in range(rounds):
            metadata = tf.compat.v1.RunMetadata()
            start = time.perf_counter()
            session.run(target, {source: x}, options=options, run_metadata=metadata)
            walls.append(time.perf_counter() - start)
            for device in metadata.step_stats.dev_stats:
                for node in device.node_stats:
                    label = node.timeline_label
                    kind = label.split(" = ")[1].split("(")[0] if " = " in label else node.node_name
                    ms = (node.all_end_rel_micros) / 1000 / rounds
                    by_type[kind] += ms
                    previous = by_node.get(node.node_name, (kind, 0.0))
                    by_node[node.node_name] = (kind, previous[1] + ms)
    return by_type, by_node, 1000 * float(np.median(walls))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    model = kl.DeepLabV3Plus((args.size, args.size, 3), classes=21, backbone="mobilenetv2", output_stride=16)
    x = np.random.default_rng(0).uniform(-1, 1, (1, args.size, args.size, 3)).astype("float32")
    for title, m in (("Keras model", model), ("Predictor (folded)", fold_batchnorm(model))):
        by_type, by_node, wall = op_times(m, x, args.rounds)
        total = sum(by_type.values())
        print(f"\n{title}: wall {wall:.1f} ms (traced), op time sum {total:.1f} ms")
        print("| op | ms | % |\n|---|---|---|")
        for kind, ms in by_type.most_common(args.top):
            print(f"| {kind} | {ms:.1f} | {100 * ms / total:.0f} |")
        print("\nslowest nodes:")
        for name, (kind, ms) in sorted(by_node.items(), key=lambda kv: -kv[1][1])[: args.top]:
            print(f"| {name} | {kind} | {ms:.2f} |")


if __name__ == "__main__":
    main()
