"""Fine-tuning converted weights on your own photos or masks.

    python -m keras_lightnets.training.finetune --weights IN.h5 --data DIR --out OUT.h5 \
        --epochs 10 --batch-size 16 --lr 0.01 [--replicas N] [--freeze-backbone]

The model is rebuilt from IN.h5's record (`keras_lightnets.weights_info`);
a classifier of another class count is replaced by a new one, every other
layer keeps its weights. Data layouts are those of `keras_lightnets.training.data`.
OUT.h5 carries IN.h5's record with the new class count (and class names),
so `from_h5`, the demo, the exports and `lightnets predict`
read it.

Distribution goes through tf.distribute: `--replicas N` trains on N local
GPUs (all local GPUs by default), or on N logical CPU devices on a machine
without GPUs; with `TF_CONFIG` set, MultiWorkerMirroredStrategy across
machines. With several replicas, BatchNorm is synchronized across them, the
loss is the mean over the labelled pixels of the *global* batch and each
Dropout mask is the one one device draws for the same image, so N replicas
with global batch B compute the gradients, BatchNorm statistics, losses and
metrics of one device with batch B, whatever the data set sizes: a last
validation batch is split as evenly as tf.distribute splits it, even when
that leaves a replica without images (`keras_lightnets.training.distribute`).
`--no-dropout` sets the rate of every Dropout layer to 0.

`style="torch"` models keep their BatchNorm epsilon 1e-5 and momentum 0.9
(PyTorch's 0.1) while training; a frozen layer (`--freeze-backbone`, or
`trainable=False`) runs its BatchNorm in inference mode, so its statistics
stay fixed.
"""

import json
import os
import sys
import time

from keras_lightnets import registry
from keras_lightnets.errors import LightnetsError
from keras_lightnets.files import check_output_path
from keras_lightnets.training import distribute
from keras_lightnets.training.data import (
    IGNORE_LABEL,
    check_dataset,
    find_dataset,
)

DEFAULT_SEGMENTATION_SIZE = 512


class FinetuneError(LightnetsError, ValueError):
    """A user mistake (arguments, files); the message is one line."""


def read_h5_weights(path):
    """`{layer_name: [arrays]}` of a legacy-layout Keras .h5 file."""
    from keras_lightnets.weights.h5 import read_layer_weights

    return dict(read_layer_weights(path) or [])


def load_keeping_head(model, path, head_layers):
    """Loads `path` into `model` by layer name; a classifier of another shape
    keeps its fresh initialisation (its old weights are not even read).
    Returns the names of the replaced layers."""
    from keras_lightnets.weights.h5 import WeightsMismatchError
    from keras_lightnets.weights.loading import load_by_name

    try:
        return load_by_name(model, path, replaceable=head_layers)
    except (WeightsMismatchError, FileNotFoundError) as err:
        raise FinetuneError(str(err)) from None


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
    from keras_lightnets.catalog import record_builder

    record = read_weights_record(weights)
    builder = record_builder(weights, record)
    kwargs = dict(record["builder_kwargs"])
    if classes is not None:
        kwargs["classes"] = classes
    kwargs["input_shape"] = (*image_size, 3)
    kwargs["classifier_activation"] = None
    try:
        model = builder(**kwargs)
    except (ValueError, TypeError) as err:  # arguments the record's schema allows but the builder refuses
        raise FinetuneError(f"{weights}: {record['builder']} refuses its arguments ({err})") from None
    head_layers = registry.spec_of(record).head_layers
    replaced = load_keeping_head(model, weights, head_layers)
    if registry.task_of(record) == "segmentation":
        import keras

        from keras_lightnets.models.common import feature_outputs

        # the backbone: what computes the feature taps the head reads
        features = feature_outputs(model, builder.feature_taps(**kwargs))
        backbone = {layer.name for layer in keras.Model(model.inputs, list(features.values())).layers}
    else:
        backbone = {layer.name for layer in model.layers} - set(head_layers)
    return model, record, replaced, backbone


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


def training_model(base, strategy, classes, segmentation, lr, batch_spec, dropout=True, frozen=(), run_eagerly=False):
    """`base` copied for training under `strategy` and compiled: SGD with
    momentum 0.9, the global-batch loss, accuracy or mean IoU; with several
    replicas, synchronized BatchNorm and steps that work however a batch is
    split (`keras_lightnets.training.distribute`). `batch_spec`: the training
    dataset's `element_spec`; `frozen`: names of layers not to train."""
    import keras
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
        model = distribute.training_copy(base, synchronized=replicas > 1, dropout=dropout)
        for layer in model.layers:
            if layer.name in frozen:
                layer.trainable = False
        if segmentation:
            metric = keras.metrics.MeanIoU(classes, name="miou", ignore_class=IGNORE_LABEL, sparse_y_pred=False)
        else:
            metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=0.9),
            loss=distribute.loss_class()(),
            metrics=[metric],
            # the same graph on one device and on several (XLA is off under
            # tf.distribute), and no XLA compile time on CPU
            jit_compile=False,
            run_eagerly=run_eagerly,
        )
    distribute.replica_steps(model, strategy, batch_spec)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        distribute.multi_worker_keras(model, strategy)
    return model


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
    out = check_output_path(out, overwrite=force)
    record = read_weights_record(weights)
    dataset = find_dataset(data)
    segmentation = registry.task_of(record) == "segmentation"
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
    replicas = strategy.num_replicas_in_sync
    if batch_size < replicas:
        raise FinetuneError(f"--batch-size {batch_size} is smaller than the {replicas} replicas: "
                            "each replica needs at least one image per training step")
    keras.utils.set_random_seed(seed)
    base, record, replaced, backbone = build_model(weights, classes, size)
    preprocessing = record.get("preprocessing") or {}
    train = data_lib.training_dataset(dataset, dataset.train, preprocessing, size, batch_size, seed, epochs)
    val = None
    if dataset.val is not None:
        val = data_lib.training_dataset(dataset, dataset.val, preprocessing, size, batch_size, training=False)
    frozen = backbone if freeze_backbone else ()
    model = training_model(base, strategy, classes, segmentation, lr, train.element_spec, dropout, frozen, run_eagerly)
    del base
    steps = len(dataset.train.images) // batch_size
    chief = distribute.is_chief(distribute.tf_config())
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


