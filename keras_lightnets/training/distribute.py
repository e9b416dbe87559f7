"""Training on several devices with tf.distribute, computing what one device computes.

`--replicas N` trains on N local GPUs (all local GPUs by default), or on N
logical CPU devices on a machine without GPUs; with `TF_CONFIG` set,
MultiWorkerMirroredStrategy across machines. With several replicas,
BatchNorm is synchronized across them (`training_copy`), the loss is the
mean over the labelled pixels of the *global* batch
(`GlobalBatchCrossEntropy`) and each Dropout mask is the one one device
would draw for the same image (`GlobalBatchDropout`), so N replicas with
global batch B compute the gradients, BatchNorm statistics and logged
losses of one device with batch B.

A global batch is split into consecutive slices, one per replica, as evenly
as possible: a last validation batch smaller than the replica count leaves
some replicas without images. `replica_steps` makes those steps work in
graph mode, where TensorFlow's oneDNN CPU kernels do not (a convolution of
an empty batch returns its input, a max-pool gradient aborts).
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


def _sum_over_replicas(context, value):
    import tensorflow as tf

    if context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def global_moments(inputs, axes):
    """`(mean, variance)` over `axes` of the inputs of every replica: the
    mean first, then the mean squared deviation from it (the biased
    variance, as one device's `tf.nn.moments`); None in a cross-replica
    context. Keras's `synchronized=True` computes E[x²] - E[x]², which in
    float32 loses most digits when |mean| >> std (a ReLU6 channel near 6,
    say) and, with PyTorch's epsilon 1e-5, changes the output."""
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None:
        return None
    local_sum = tf.reduce_sum(inputs, axis=axes)
    local_count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], inputs.dtype)
    totals = _sum_over_replicas(context, tf.concat([local_sum, local_count[None]], axis=0))
    count = totals[-1]
    mean = totals[:-1] / count
    squares = tf.reduce_sum(tf.math.squared_difference(inputs, tf.stop_gradient(mean)), axis=axes)
    variance = _sum_over_replicas(context, squares) / count
    return mean, variance


def sync_batchnorm_class():
    from keras_lightnets.keras_internals import batch_normalization_with_moments

    return batch_normalization_with_moments(global_moments, name="SyncBatchNormalization")


def dropout_class():
    import keras
    import tensorflow as tf

    class GlobalBatchDropout(keras.layers.Dropout):
        """Dropout whose mask for an image is the one one device would draw
        for it: every replica draws the mask of the whole global batch from
        the same seed (the layer's seed generator advances alike on every
        replica) and keeps the rows of its own slice. With several replicas
        per worker under MultiWorkerMirroredStrategy, slices may not follow
        replica ids: the masks are then still independent draws of the same
        rate, not one device's."""

        def call(self, inputs, training=False):
            if not training or self.rate == 0:
                return inputs
            count = tf.shape(inputs)[0]
            offset, total = 0, count
            context = tf.distribute.get_replica_context()
            if context is not None and context.num_replicas_in_sync > 1:
                counts = context.all_gather(count[None], axis=0)
                replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
                offset, total = tf.reduce_sum(counts[:replica]), tf.reduce_sum(counts)
            shape = tf.unstack(tf.shape(inputs))
            if self.noise_shape is not None:
                shape = [s if n is None else n for s, n in zip(shape, self.noise_shape)]
            noise = keras.random.uniform(tf.stack([total, *shape[1:]]), seed=self.seed_generator)
            keep = tf.cast(noise[offset : offset + count] >= self.rate, inputs.dtype)
            return inputs * keep / tf.cast(1.0 - self.rate, inputs.dtype)

    return GlobalBatchDropout


def training_copy(model, synchronized=False, dropout=True):
    """A copy of `model` (weights included) with synchronized BatchNorm and
    global-batch Dropout (or Dropout rates set to 0); build it inside the
    strategy's scope."""
    import keras

    sync_bn, global_dropout = sync_batchnorm_class(), dropout_class()

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.Dropout):
            if not dropout:
                config["rate"] = 0.0
            if type(layer) is keras.layers.Dropout:
                return global_dropout.from_config(config)
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

        Each replica's loss has the gradient of its share of that mean
        (local sum / global count): tf.distribute sums the replicas'
        gradients, which gives the gradient of the global mean however the
        batch was split. Its value is the global mean / N, so that Keras's
        loss tracker (value x N, weighted by the replica's image count, summed
        over replicas) logs the global mean weighted by the global batch size,
        as one device does; a replica without images adds nothing.
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
            local = keras.ops.stack([keras.ops.sum(per_item * valid), keras.ops.sum(valid)])
            context = tf.distribute.get_replica_context()
            replicas = 1 if context is None else context.num_replicas_in_sync
            total, count = keras.ops.unstack(_sum_over_replicas(context, tf.stop_gradient(local)) if replicas > 1 else local)
            count = keras.ops.maximum(count, 1.0)
            share = local[0] / count
            return share + tf.stop_gradient(total / count / replicas - share)

        def get_config(self):
            return {"name": self.name, "ignore_class": self.ignore_class}

    return GlobalBatchCrossEntropy


def replica_steps(model, strategy, batch_spec):
    """Makes `model.fit`/`evaluate` run with several replicas as with one,
    whatever the batch sizes (Keras 3.15, graph mode):

    1. Before the first step, Keras (`_maybe_symbolic_build`) calls
       `strategy.reduce("MEAN", (x, y), axis=None)` on the first distributed
       batch only to learn its shapes and dtypes: this fails when the
       replicas' slices differ in size (a last batch of 3 images on 2
       replicas) and, with several workers, always (tensorflow/tensorflow#72388).
       Keras builds from `batch_spec` (the dataset's `element_spec`) instead.
    2. A replica given no images (a last validation batch smaller than the
       replica count) runs the model on one blank image, whose output is
       dropped: TensorFlow's oneDNN CPU kernels give wrong shapes on empty
       batches. At evaluation BatchNorm uses its moving statistics, so the
       blank image changes nothing else; the loss and metrics see the
       replica's (empty) batch. Training batches are never empty: `finetune`
       asks for a global batch of at least one image per replica.
    """
    import keras
    import tensorflow as tf

    from keras_lightnets import keras_internals as internals

    if strategy.num_replicas_in_sync == 1:
        return
    symbolic_build = internals.symbolic_build(type(model))
    if symbolic_build is not None:
        symbols = tf.nest.map_structure(lambda spec: keras.KerasTensor(tuple(spec.shape), spec.dtype.name), batch_spec)

        def build_from_spec(iterator=None, data_batch=None):
            return symbolic_build(model, data_batch=symbols if data_batch is None else data_batch)

        internals.replace_symbolic_build(model, build_from_spec)

    tracker = next(metric for metric in model.metrics if metric.name == "loss")

    def test_step(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        count = tf.shape(x)[0]
        blank = tf.zeros([1, *x.shape[1:]], x.dtype)
        y_pred = model(tf.cond(count > 0, lambda: x, lambda: blank), training=False)[:count]
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False)
        tracker.update_state(loss * strategy.num_replicas_in_sync, sample_weight=count)
        return model.compute_metrics(x, y, y_pred, sample_weight)

    model.test_step = test_step


def multi_worker_keras(model, strategy):
    """Works around a place where Keras 3's TensorFlow trainer cannot run
    `fit`/`evaluate` under MultiWorkerMirroredStrategy with several workers
    (tensorflow/tensorflow#72388; the other one is in `replica_steps`);
    with one worker nothing changes.

    Every step's logs (loss and metric results, scalars) are averaged over
    the replicas with `strategy.reduce("MEAN", value, axis=0)`, which rejects
    scalars ("Invalid reduction dimension 0 for input with 0 dimensions").
    The steps return them with a leading axis of length 1, which that reduce
    averages over the replicas and removes.

    This does not change the training computation (the gradients, the
    synchronized BatchNorm, the optimizer); the epoch's logs come from the
    metrics' variables as before.
    """
    import tensorflow as tf

    if strategy.num_replicas_in_sync <= len(strategy.extended.worker_devices):
        return  # one worker

    def with_replica_axis(step):
        def step_with_replica_axis(data):
            logs = step(data)
            return tf.nest.map_structure(lambda v: v[None] if v.shape.rank == 0 else v, logs)

        return step_with_replica_axis

    model.train_step = with_replica_axis(model.train_step)
    model.test_step = with_replica_axis(model.test_step)
