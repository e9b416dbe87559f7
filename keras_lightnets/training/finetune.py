"""Fine-tuning converted weights on your own photos or masks.

    python -m keras_lightnets.training.finetune --weights IN.h5 --data DIR --out OUT.h5 \
        --epochs 10 --batch-size 16 --lr 0.01 [--replicas N] [--freeze-backbone]

The model is rebuilt from IN.h5's record (`keras_lightnets.weights_info`);
a classifier of another class count is replaced by a new one, every other
layer keeps its weights. Data layouts are those of `keras_lightnets.training.data`.
OUT.h5 carries IN.h5's record with the new class count (and class names),
so `from_h5`, the demo, the exports and `python -m keras_lightnets.runtime.folder`
read it.

Distribution goes through tf.distribute: `--replicas N` trains on N local
GPUs (all local GPUs by default), or on N logical CPU devices on a machine
without GPUs; with `TF_CONFIG` set, MultiWorkerMirroredStrategy across
machines. With several replicas, BatchNorm is synchronized across them and
the loss is the mean over the labelled pixels of the *global* batch, so N
replicas with global batch B compute the gradients and BatchNorm statistics
of one device with batch B. Dropout is the one exception: each replica
draws its own masks, so with dropout N replicas match one device in
distribution only; `--no-dropout` (rate 0 in every Dropout layer) makes
them match exactly, which is what the tests compare.

`style="torch"` models keep their BatchNorm epsilon 1e-5 and momentum 0.9
(PyTorch's 0.1) while training; a frozen layer (`--freeze-backbone`, or
`trainable=False`) runs its BatchNorm in inference mode, so its statistics
stay fixed.
"""

import argparse
import functools
import json
import os
import sys
import time

from keras_lightnets.training.data import (
    IGNORE_LABEL,
    DataError,
    check_dataset,
    find_dataset,
)

# Classifier layers of the builders, replaced when the class count changes.
HEAD_LAYERS = ("predictions", "conv_preds", "conv10", "logits")
SEGMENTATION_BUILDERS = ("DeepLabV3Plus",)
DEFAULT_SEGMENTATION_SIZE = 512


class FinetuneError(ValueError):
    """A user mistake (arguments, files); the message is one line."""


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
            raise FinetuneError(f"--replicas {replicas}, but this machine has {len(gpus)} GPUs")
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
                raise FinetuneError(
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
    except ValueError:
        config = None
    if not isinstance(config, dict) or "cluster" not in config or "type" not in config.get("task", {}):
        raise FinetuneError("TF_CONFIG is not a JSON object with 'cluster' and 'task'")
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


def read_h5_weights(path):
    """`{layer_name: [arrays]}` of a legacy-layout Keras .h5 file."""
    from keras_lightnets.weights.h5 import read_layer_weights

    return dict(read_layer_weights(path) or [])


def load_keeping_head(model, path):
    """Loads `path` into `model` by layer name; a classifier of another shape
    keeps its fresh initialisation. Returns the names of the replaced layers."""
    from keras_lightnets.weights.h5 import layer_variables

    saved = read_h5_weights(path)
    replaced = []
    for layer in model.layers:
        variables = layer_variables(layer)
        if not variables:
            continue
        arrays = saved.get(layer.name)
        shapes = [tuple(v.shape) for v in variables]
        if arrays is not None and [a.shape for a in arrays] == shapes:
            for variable, array in zip(variables, arrays):
                variable.assign(array)
        elif layer.name in HEAD_LAYERS:
            replaced.append(layer.name)
        elif arrays is None:
            raise FinetuneError(f"{path} has no weights for layer '{layer.name}'")
        else:
            found = ", ".join(str(a.shape) for a in arrays)
            raise FinetuneError(f"{path}: layer '{layer.name}' has shapes {found}, the model {shapes}")
    return replaced


def read_weights_record(path):
    """The record of a keras-lightnets weights file, or FinetuneError."""
    import keras_lightnets as kl
    from keras_lightnets.weights.h5 import WeightsMismatchError

    try:
        return kl.weights_info(path)
    except (WeightsMismatchError, FileNotFoundError) as err:
        raise FinetuneError(str(err)) from None


def build_model(weights, classes=None, image_size=None):
    """Rebuilds the model of `weights`' record with `classes` logits.

    Returns `(model, record, replaced head layers, backbone layer names)`.
    """
    import keras_lightnets as kl

    record = read_weights_record(weights)
    builder = kl.MODELS.get(record.get("builder"))
    if builder is None:
        raise FinetuneError(f"{weights} is for an unknown model {record.get('builder')!r}")
    kwargs = dict(record["builder_kwargs"])
    if classes is not None:
        kwargs["classes"] = classes
    kwargs["input_shape"] = (*image_size, 3)
    kwargs["classifier_activation"] = None
    kwargs.pop("weights", None)
    model = builder(**kwargs)
    replaced = load_keeping_head(model, weights)
    pyramid = getattr(model, "pyramid_outputs", None)
    if pyramid:
        import keras

        backbone = {layer.name for layer in keras.Model(model.inputs, list(pyramid.values())).layers}
    else:
        backbone = {layer.name for layer in model.layers} - set(HEAD_LAYERS)
    return model, record, replaced, backbone


def _sync_bn_class():
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

    sync_bn = _sync_bn_class()

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


def _loss_class():
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


def _multi_worker_keras(model, strategy):
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


def epoch_logger(stream, images_per_epoch):
    """A callback printing one JSON line per epoch (metrics, seconds, images/s)."""
    import keras

    class EpochLines(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.started
            line = {"epoch": epoch + 1, **{k: round(float(v), 6) for k, v in (logs or {}).items()}}
            line["seconds"] = round(seconds, 3)
            line["images_per_second"] = round(images_per_epoch / seconds, 2)
            stream.write(json.dumps(line) + "\n")
            stream.flush()

    return EpochLines()


def image_size_for(record, image_size, segmentation):
    if image_size is not None:
        return tuple(int(s) for s in image_size)
    shape = record["builder_kwargs"].get("input_shape")
    if shape and shape[0] and shape[1]:
        return int(shape[0]), int(shape[1])
    size = (record.get("preprocessing") or {}).get("size")
    if size and not segmentation:
        return int(size), int(size)
    return (DEFAULT_SEGMENTATION_SIZE,) * 2 if segmentation else (224, 224)


def finetune(
    weights,
    data,
    out,
    epochs=1,
    batch_size=16,
    lr=0.01,
    seed=0,
    num_classes=None,
    image_size=None,
    freeze_backbone=False,
    dropout=True,
    strategy=None,
    verbose=1,
    stream=None,
    force=False,
    run_eagerly=False,
):
    """Fine-tunes the weights file `weights` on `data` and writes `out`.

    Arguments are those of the command line (`--help`). `strategy` is a
    `tf.distribute.Strategy` (the default strategy when `None`). Returns the
    training history (`{metric: [value per epoch]}`).

    Raises:
        FinetuneError, DataError: with a one-line message, before anything
            is written.
    """
    out = os.path.abspath(os.fspath(out))
    if os.path.isdir(out):
        raise FinetuneError(f"{out} is a directory; give the .h5 file to write")
    if not os.path.isdir(os.path.dirname(out)):
        raise FinetuneError(f"{os.path.dirname(out)}: no such directory")
    if os.path.exists(out) and not force:
        raise FinetuneError(f"{out} exists; use --force to replace it")
    record = read_weights_record(weights)
    dataset = find_dataset(data)
    segmentation = record.get("builder") in SEGMENTATION_BUILDERS
    if segmentation != (dataset.task == "segmentation"):
        raise FinetuneError(
            f"{weights} is a {'segmentation' if segmentation else 'classification'} model, "
            f"{data} holds {dataset.task} data"
        )
    largest = check_dataset(dataset, num_classes)
    if num_classes is not None:
        classes = num_classes
        if dataset.class_names is not None and len(dataset.class_names) > num_classes:
            raise FinetuneError(f"{data}: {len(dataset.class_names)} class folders, but --num-classes {num_classes}")
    elif dataset.class_names is not None:
        classes = len(dataset.class_names)
    else:
        record_classes = record["builder_kwargs"].get("classes")
        classes = record_classes if record_classes and largest < record_classes else largest + 1
        if classes < 2:
            raise FinetuneError(f"{data}: the masks hold no class other than 0; give --num-classes")
    size = image_size_for(record, image_size, segmentation)
    if len(dataset.train.images) < batch_size:
        raise FinetuneError(f"{data}: {len(dataset.train.images)} training images, fewer than --batch-size {batch_size}")

    import keras
    import tensorflow as tf

    from keras_lightnets.training import data as data_lib
    from keras_lightnets.weights.h5 import save_model_weights

    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(seed)
    base, record, replaced, backbone = build_model(weights, classes, size)
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        model = training_copy(base, synchronized=replicas > 1, dropout=dropout)
        if freeze_backbone:
            for layer in model.layers:
                if layer.name in backbone:
                    layer.trainable = False
        if segmentation:
            metric = keras.metrics.MeanIoU(classes, name="miou", ignore_class=IGNORE_LABEL, sparse_y_pred=False)
        else:
            metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=0.9),
            loss=_loss_class()(),
            metrics=[metric],
            # the same graph on one device and on several (XLA is off under
            # tf.distribute), and no XLA compile time on CPU
            jit_compile=False,
            run_eagerly=run_eagerly,
        )
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        _multi_worker_keras(model, strategy)
    del base
    preprocessing = record.get("preprocessing") or {}
    train = data_lib.training_dataset(dataset, dataset.train, preprocessing, size, batch_size, seed, epochs)
    val = None
    if dataset.val is not None:
        val = data_lib.training_dataset(dataset, dataset.val, preprocessing, size, batch_size, training=False)
    steps = len(dataset.train.images) // batch_size
    chief = is_chief(tf_config())
    callbacks = [epoch_logger(stream or sys.stdout, steps * batch_size)] if chief else []
    history = model.fit(
        train,
        validation_data=val,
        epochs=epochs,
        steps_per_epoch=steps,
        callbacks=callbacks,
        verbose=verbose if chief else 0,
        shuffle=False,  # the dataset draws each epoch's order itself, from --seed
    )
    if chief:
        kwargs = {**record["builder_kwargs"], "classes": classes}
        new_record = {**record, "builder_kwargs": kwargs}
        if not segmentation:
            kwargs["input_shape"] = [size[0], size[1], 3]
            if preprocessing.get("size") and size[0] == size[1]:
                new_record["preprocessing"] = {**preprocessing, "size": size[0]}
            new_record["class_names"] = dataset.class_names
        new_record["finetune"] = {
            "from": os.path.basename(os.fspath(weights)),
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "replicas": replicas,
            "image_size": list(size),
            "freeze_backbone": freeze_backbone,
            "replaced_layers": replaced,
            "metrics": {k: float(v[-1]) for k, v in history.history.items()},
        }
        save_model_weights(model, out, new_record, overwrite=force)
    return history.history


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_lightnets.training.finetune",
        description="Fine-tune a keras-lightnets weights file on a folder of images (or images and masks).",
        epilog="Data: DIR/train/<class>/*, DIR/val/<class>/* (classification); DIR/{train,val}/images/* "
        "with DIR/{train,val}/masks/*.png (segmentation, 255 = ignore); or a Pascal VOC folder "
        "(JPEGImages, SegmentationClass, ImageSets/Segmentation/{train,val}.txt). "
        "With TF_CONFIG set, runs as one worker of MultiWorkerMirroredStrategy.",
    )
    parser.add_argument("--weights", required=True, help="IN.h5, a file written by the converter or by this command")
    parser.add_argument("--data", required=True, help="the data folder")
    parser.add_argument("--out", required=True, help="OUT.h5 to write (atomically, at the end)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch size (all replicas)")
    parser.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (momentum 0.9)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replicas", type=int, help="devices to train on: GPUs, else logical CPU devices")
    parser.add_argument("--num-classes", type=int, help="class count (default: from the data)")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="model input size")
    parser.add_argument("--freeze-backbone", action="store_true", help="train the head only")
    parser.add_argument("--no-dropout", action="store_true", help="Dropout rate 0 (replicas match one device exactly)")
    parser.add_argument("--force", action="store_true", help="replace OUT.h5 if it exists")
    parser.add_argument("--run-eagerly", action="store_true",
                        help="run each step eagerly, as Keras' `compile(run_eagerly=True)`: for debugging, "
                        "or a few steps on small data (no graph to trace)")
    args = parser.parse_args(argv)
    for name in ("epochs", "batch_size", "replicas", "num_classes"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.num_classes is not None and args.num_classes > IGNORE_LABEL:
        parser.error(f"--num-classes must be below {IGNORE_LABEL} (the ignore label)")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        # checked before TensorFlow starts, so mistakes fail fast
        find_dataset(args.data)
        config = tf_config()
        import tensorflow as tf

        strategy = make_strategy(args.replicas)
        tf.config.experimental.enable_op_determinism()
        stdout = sys.stdout
        # Keras's progress bar goes to stderr; stdout holds the JSON lines.
        sys.stdout = sys.stderr
        try:
            finetune(
                args.weights,
                args.data,
                args.out,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=args.seed,
                num_classes=args.num_classes,
                image_size=args.image_size,
                freeze_backbone=args.freeze_backbone,
                dropout=not args.no_dropout,
                strategy=strategy,
                stream=stdout,
                force=args.force,
                run_eagerly=args.run_eagerly,
            )
        finally:
            sys.stdout = stdout
    except (FinetuneError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if is_chief(config):
        print(f"written {os.path.abspath(args.out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
