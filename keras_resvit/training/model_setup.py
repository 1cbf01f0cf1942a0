"""The model a run trains: built (or rebuilt for its placement), fitted to the data, compiled
with the recipe's optimizer, schedule and loss."""

import keras
import numpy as np

from keras_resvit.base.class_names import set_class_names
from keras_resvit.base.validation import check_int
from keras_resvit.data.checks import has_soft_labels
from keras_resvit.factory import create_model
from keras_resvit.layers.normalization import PixelMean
from keras_resvit.models.common import (
    classifier_activation,
    is_vit,
    low_precision,
    outputs_logits,
)
from keras_resvit.models.vit import resize_vit
from keras_resvit.training.data_checks import check_channels
from keras_resvit.training.ema_statistics import average_statistics
from keras_resvit.training.losses import MultiLabelBinaryCrossentropy, SoftmaxCrossentropy
from keras_resvit.training.optimizers import recipe_optimizer
from keras_resvit.training.recipes import get_recipe, recipe_model_options
from keras_resvit.training.schedules import recipe_schedule


def build_optimizer(recipe, global_batch_size, total_steps, ema=None):
    """The recipe's optimizer (its weight decay mode, clipping and exclusions) around its
    schedule for a run of `total_steps` steps of `global_batch_size`, with an optional EMA.
    `recipe`: a `Recipe` or a recipe's name."""
    recipe = get_recipe(recipe)
    check_int("global_batch_size", global_batch_size)
    check_int("total_steps", total_steps)
    if recipe.schedule == "plateau":  # a rate that `plateau_callback` lowers
        rate = recipe.learning_rate * global_batch_size / recipe.batch_size
        return recipe_optimizer(recipe, rate, ema)
    schedule = recipe_schedule(recipe, global_batch_size, total_steps)
    return recipe_optimizer(recipe, schedule, ema)


def _loss(model, soft_labels, recipe):
    from_logits = outputs_logits(model)
    label_smoothing = recipe.label_smoothing
    if recipe.loss == "binary_cross_entropy":
        if not from_logits:
            raise ValueError(
                f"model {model.name!r} ends in an activation, but the recipe trains with binary "
                "cross-entropy, one sigmoid per class on the logits; build the model with "
                "classifier_activation=None (a model built by name gets it from the recipe)."
            )
        # MixUp/CutMix pipelines (kr.data) already smooth the labels they mix.
        return MultiLabelBinaryCrossentropy(
            target_threshold=recipe.target_threshold,
            label_smoothing=0.0 if soft_labels else label_smoothing,
        )
    activation = classifier_activation(model)
    if activation not in ("linear", "softmax"):
        # Keras would take them for probabilities over the classes, and its TensorFlow loss
        # reads a sigmoid's logits off its outputs: another loss on each backend.
        raise ValueError(
            f"model {model.name!r} ends in a {activation}, but the recipe trains with the "
            "cross-entropy of a softmax over the classes; build the model with "
            'classifier_activation="softmax" (or None, logits), or train it with a binary '
            'cross-entropy recipe ("deit3", "rsb_a1", ...).'
        )
    # MixUp/CutMix pipelines (kr.data) already smooth the labels they mix.
    smoothing = 0.0 if soft_labels else label_smoothing
    return cross_entropy(from_logits, sparse=not (soft_labels or smoothing), smoothing=smoothing)


def cross_entropy(from_logits, sparse, smoothing=0.0):
    """The cross-entropy of a softmax over the classes, of logits (`from_logits`) or of the
    softmax's probabilities (the same on every backend: `SoftmaxCrossentropy`), against class
    indices (`sparse`) or one-hot / mixed rows smoothed by `smoothing`."""
    if not from_logits:
        return SoftmaxCrossentropy(sparse=sparse, label_smoothing=smoothing)
    if sparse:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing)


def compile_model(
    model,
    recipe,
    global_batch_size,
    total_steps,
    *,
    soft_labels=False,
    ema=None,
    optimizer=None,
    loss=None,
):
    """Compiles `model` as `train()` does: the recipe's optimizer, schedule and loss (or the
    `optimizer` and `loss` given instead), and accuracy.

    Args:
        model: a `keras.Model` (built under the distribution scope that will train it).
        recipe: a `Recipe`.
        global_batch_size: images per optimizer step over all replicas (scales the rate).
        total_steps: optimizer steps of the whole run (the schedule's length).
        soft_labels: labels are one-hot or mixed probabilities rather than class indices.
        ema: momentum of a weight EMA, or None.
        optimizer: a Keras optimizer used instead of the recipe's, or None.
        loss: a Keras loss (or its name) used instead of the recipe's, or None.

    Example:
    >>> from keras_resvit.training.model_setup import compile_model
    >>> import keras_resvit as kr
    >>> from keras_resvit.training.recipes import get_recipe
    >>> model = kr.create_model("resnet20")
    >>> compile_model(model, get_recipe("resnet_cifar"), 128, 1000)
    """
    if optimizer is None:
        optimizer = build_optimizer(recipe, global_batch_size, total_steps, ema)
    optimizer = keras.optimizers.get(optimizer)
    # The layers' policy: a functional model reloaded from a file has the default one itself.
    float16 = low_precision(model) == "mixed_float16"
    if float16 and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        # Keras' compile would wrap it too (only where the model's own policy says so), but
        # record the inner optimizer in the model's files, which then reload without the
        # loss scale and skip the optimizer's state.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(
        optimizer=optimizer,
        loss=_loss(model, soft_labels, recipe) if loss is None else loss,
        metrics=["accuracy"],
    )
    average_statistics(model)  # with an average of the weights, of BatchNorm's statistics


def label_encoding(recipe, loss, soft_labels, val_data, labels=None):
    """(one_hot, soft): whether the loss takes one-hot targets, and whether it is compiled for
    soft labels that it leaves unsmoothed. A categorical loss (soft labels on either side, or
    label smoothing) and the recipe's binary cross-entropy take one-hot targets: integer labels
    of the training and validation data are encoded to match. A user's `loss` replaces the
    recipe's label smoothing and loss.

    Soft training labels (`labels`: the first batch's) that are already smoothed (every entry
    above 0, as a `kr.data` mixing preset's) are not smoothed again; one-hot or mixed labels
    with zeros (a user's own) get the recipe's smoothing."""
    smoothing = recipe.label_smoothing if loss is None else 0.0
    binary = loss is None and recipe.loss == "binary_cross_entropy"
    val_soft = val_data is not None and has_soft_labels(val_data)
    one_hot = soft_labels or val_soft or bool(smoothing) or binary
    if soft_labels and smoothing and labels is not None and np.min(labels) <= 0:
        return one_hot, False
    return one_hot, soft_labels or (val_soft and not smoothing)


def carry_class_names(model, train_data):
    """Gives `model` the class names of `train_data` (one per output), so that the checkpoints
    and the returned model carry them (`kr.files.save_model`)."""
    names = getattr(train_data, "class_names", None)
    if names and len(names) == model.output_shape[-1]:
        set_class_names(model, [str(name) for name in names])


def in_scope(optimizer, placement):
    """The user's optimizer, rebuilt from its config inside the distribution's scope (as the
    model is) when several replicas train: its variables must be the strategy's."""
    if optimizer is None or placement.num_replicas == 1:
        return optimizer
    return type(optimizer).from_config(optimizer.get_config())


def model_for_run(model_or_name, recipe, placement, num_classes=None):
    """The model to train: built from its registry name with the recipe's options and the
    data's `num_classes` (the registry's default where the data does not say), or by the
    function given (in the caller's precision and scope), or the one given (cloned into the
    placement's scope when several replicas train)."""
    if isinstance(model_or_name, str):
        options = recipe_model_options(model_or_name, recipe)
        if num_classes is not None:
            options["num_classes"] = num_classes
        model = create_model(model_or_name, **options)
        why = "the model's default" if num_classes is None else "from the data"
        print(f"train: {model_or_name} for {model.output_shape[-1]} classes ({why})")
        return model
    if callable(model_or_name) and not isinstance(model_or_name, keras.Model):
        model = model_or_name()
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"model_or_name={model_or_name!r} returned a {type(model).__name__}; a "
                "function given as the model must build and return a keras.Model."
            )
        return model
    if not isinstance(model_or_name, keras.Model):
        raise ValueError(
            f"model_or_name of type {type(model_or_name).__name__} is not valid; pass a "
            "keras.Model, a registry name (kr.list_models()) or a function that builds the "
            "model."
        )
    if placement.num_replicas == 1:
        return model_or_name
    # Variables must be created under the strategy: rebuild the model inside its scope.
    clone = keras.models.clone_model(model_or_name)
    clone.set_weights(model_or_name.get_weights())
    # A layer's config says whether it trains, not each variable (`enable_lora` freezes the
    # biases of the layers it adapts): copy the variables' own flags.
    for variable, original in zip(clone.weights, model_or_name.weights, strict=True):
        variable.trainable = original.trainable
    return clone


def adapt_pixel_means(model, train_data):
    """Sets the mean image of every un-adapted `PixelMean` from the training images before
    augmentation (He et al.: "the per-pixel mean subtracted"), or refuses the model."""
    layers = [layer for layer in model.layers if isinstance(layer, PixelMean) and not layer.adapted]
    if not layers:
        return
    source = getattr(train_data, "unaugmented", None)
    if source is None:
        raise ValueError(
            f"the model's PixelMean layer {layers[0].name!r} has no mean yet and train_data "
            "does not carry its images without augmentation; load the data with "
            "kr.data.load_dataset, or call model.get_layer"
            f"({layers[0].name!r}).adapt(training_images) first."
        )
    for layer in layers:
        layer.adapt(source)
    print(f"train: per-pixel mean of {int(layers[0].count.numpy())} training images set")


def fit_resolution(model, batch_shape):
    """A ViT meets data of another resolution through `resize_vit` (the paper's fine-tuning at
    higher resolution: position embeddings interpolated); other models must match."""
    wanted = tuple(model.input_shape[1:3])
    given = tuple(batch_shape[1:3])
    check_channels("train_data", model, batch_shape)
    if None in wanted or wanted == given:
        return model
    if is_vit(model):
        print(f"train: resizing {model.name} from {wanted} to the data's {given} (resize_vit)")
        return resize_vit(model, given)
    raise ValueError(
        f"train_data has {given[0]}x{given[1]} images but the model takes "
        f"{wanted[0]}x{wanted[1]}; load the data with image_size={wanted[0]} or build the "
        "model for the data's size."
    )
