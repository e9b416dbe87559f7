"""Training on several devices with tf.distribute, computing what one device computes.

`--replicas N` trains on N local GPUs (all local GPUs by default), or on N
logical CPU devices on a machine without GPUs; with `TF_CONFIG` set,
MultiWorkerMirroredStrategy across machines. With several replicas,
BatchNorm is synchronized across them (`training_copy`) and the loss is the
mean over the labelled pixels of the *global* batch
(`GlobalBatchCrossEntropy`), so N replicas with global batch B compute the
gradients and BatchNorm statistics of one device with batch B.
"""

import functools
import json
import os

from keras_lightnets.errors import UsageError
from keras_lightnets.training.data import IGNORE_LABEL


def configure_devices(replicas):
    """Splits the CPU into `replicas` logical devices when there is no GPU.

    Must run before TensorFlow initialises its devices (before any model or
    tensor is made); returns the device names for MirroredStrategy.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if replicas is None:
            return [f"/gpu:{i}" for i in range(len(gpus))]
        if replicas > len(gpus):
            raise UsageError(f"--replicas {replicas}, but this machine has {len(gpus)} GPUs")
        return [f"/gpu:{i}" for i in range(replicas)]
    replicas = replicas or 1
    if replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
            )
        except RuntimeError:
            current = len(tf.config.list_logical_devices("CPU"))
            if current != replicas:
                raise UsageError(
                    f"--replicas {replicas}: TensorFlow already started with {current} CPU devices; "
                    "run the command in a fresh process"
                ) from None
    return [f"/cpu:{i}" for i in range(replicas)]


def tf_config():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError):
        config = None
    if not isinstance(config, dict) or "cluster" not in config or "type" not in config.get("task", {}):
        raise UsageError("TF_CONFIG is not a JSON object with 'cluster' and 'task'")
    return config


def is_chief(config):
    """Whether this process writes OUT.h5 and prints the epoch lines."""
    if config is None:
        return True
    task = config["task"]
    if "chief" in config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and int(task.get("index", 0)) == 0


def make_strategy(replicas=None):
    """MultiWorkerMirroredStrategy with TF_CONFIG, else MirroredStrategy or the default."""
    import tensorflow as tf

    if tf_config() is not None:
        return tf.distribute.MultiWorkerMirroredStrategy()
    devices = configure_devices(replicas)
    if len(devices) > 1:
        return _mirrored_strategy(tuple(devices))
    return tf.distribute.get_strategy()


@functools.lru_cache(maxsize=None)
def _mirrored_strategy(devices):
    # One strategy per device set and process: a second MirroredStrategy over
    # the same devices restarts the collective keys, and its all-reduces then
    # collide with the first one's ("Shape mismatch in the collective instance").
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(list(devices))


def sync_batchnorm_class():
    import tensorflow as tf

    from keras_lightnets.keras_internals import batch_normalization_with_moments

    def moments(inputs, axes):
        """All-reduces the mean first, then the squared deviations, as one
        device's `tf.nn.moments` does: Keras's `synchronized=True` computes
        E[x²] - E[x]², which in float32 loses most digits when |mean| >> std
        (a ReLU6 channel near 6, say) and, with PyTorch's epsilon 1e-5,
        changes the output."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return None
        local_sum = tf.reduce_sum(inputs, axis=axes)
        local_count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], inputs.dtype)
        totals = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.concat([local_sum, local_count[None]], axis=0))
        count = totals[-1]
        mean = totals[:-1] / count
        squares = tf.reduce_sum(tf.math.squared_difference(inputs, tf.stop_gradient(mean)), axis=axes)
        variance = context.all_reduce(tf.distribute.ReduceOp.SUM, squares) / count
        return mean, variance

    return batch_normalization_with_moments(moments, name="SyncBatchNormalization")


def training_copy(model, synchronized=False, dropout=True):
    """A copy of `model` (weights included) with synchronized BatchNorm
    and/or Dropout rates set to 0; build it inside the strategy's scope."""
    import keras

    sync_bn = sync_batchnorm_class()

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.Dropout) and not dropout:
            config["rate"] = 0.0
        if isinstance(layer, keras.layers.BatchNormalization) and synchronized:
            return sync_bn.from_config(config)
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def loss_class():
    import keras
    import tensorflow as tf

    class GlobalBatchCrossEntropy(keras.losses.Loss):
        """Softmax cross-entropy on logits, ignoring `ignore_class`, averaged
        over the labelled samples/pixels of the global batch (all replicas).

        Each replica returns its share (local sum / global count, reduction
        "sum"); tf.distribute sums the replicas' gradients, which gives the
        gradient of the global mean however the batch was split.
        """

        def __init__(self, ignore_class=IGNORE_LABEL, name="cross_entropy"):
            super().__init__(name=name, reduction="sum")
            self.ignore_class = ignore_class

        def call(self, y_true, y_pred):
            y_true = keras.ops.cast(y_true, "int32")
            valid = keras.ops.not_equal(y_true, self.ignore_class)
            labels = keras.ops.where(valid, y_true, 0)
            per_item = keras.ops.sparse_categorical_crossentropy(labels, y_pred, from_logits=True)
            valid = keras.ops.cast(valid, per_item.dtype)
            count = keras.ops.sum(valid)
            context = tf.distribute.get_replica_context()
            if context is not None and context.num_replicas_in_sync > 1:
                count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
            return per_item * valid / keras.ops.maximum(count, 1.0)

        def get_config(self):
            return {"name": self.name, "ignore_class": self.ignore_class}

    return GlobalBatchCrossEntropy


def multi_worker_keras(model, strategy):
    """Works around two places where Keras 3's TensorFlow trainer cannot run
    `fit`/`evaluate` under MultiWorkerMirroredStrategy with several workers
    (tensorflow/tensorflow#72388); with one worker nothing changes.

    1. Before the first step, Keras (`_maybe_symbolic_build`) calls
       `strategy.reduce("MEAN", (x, y), axis=None)` on the first
       distributed batch only to learn its shapes and dtypes. With several
       workers the tuple goes to the collective ops, which fail with
       "Attempt to convert a value (PerReplica...) to a Tensor". Keras gets
       this worker's first replica's batch instead (same shapes, no
       communication).
    2. Every step's logs (loss and metric results, scalars) are averaged
       over the replicas with `strategy.reduce("MEAN", value, axis=0)`,
       which rejects scalars ("Invalid reduction dimension 0 for input with
       0 dimensions"). The steps return them with a leading axis of length
       1, which that reduce averages over the replicas and removes.

    Neither changes the training computation (the gradients, the
    synchronized BatchNorm, the optimizer); the epoch's logs come from the
    metrics' variables as before.
    """
    import tensorflow as tf

    from keras_lightnets import keras_internals as internals

    if strategy.num_replicas_in_sync <= len(strategy.extended.worker_devices):
        return  # one worker
    symbolic_build = internals.symbolic_build(type(model))
    if symbolic_build is not None:

        def local(value):
            if isinstance(value, tf.distribute.DistributedValues):
                return strategy.experimental_local_results(value)[0]
            return value

        def build_from_local_batch(iterator=None, data_batch=None):
            if iterator is not None and data_batch is None:
                for _, _, batches in iterator:
                    data_batch = tf.nest.map_structure(local, next(batches))
                    break
            return symbolic_build(model, data_batch=data_batch)

        internals.replace_symbolic_build(model, build_from_local_batch)

    def with_replica_axis(step):
        def step_with_replica_axis(data):
            logs = step(data)
            return tf.nest.map_structure(lambda v: v[None] if v.shape.rank == 0 else v, logs)

        return step_with_replica_axis

    model.train_step = with_replica_axis(model.train_step)
    model.test_step = with_replica_axis(model.test_step)
