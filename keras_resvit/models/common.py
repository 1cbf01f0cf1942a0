"""Pieces every builder shares: argument checks and the classifier head."""

import keras

POOLINGS = (None, "avg", "max")


def check_choice(argument, value, valid):
    if value not in valid:
        raise ValueError(f"{argument}={value!r} is not valid; expected one of {list(valid)}.")


def classifier_head(x, num_classes, pooling, classifier_activation):
    """Global pooling + dense classifier named "predictions" (kept float32 under mixed
    precision, so the softmax is computed in full precision)."""
    pool = keras.layers.GlobalMaxPooling2D if pooling == "max" else keras.layers.GlobalAveragePooling2D
    x = pool(name=f"{pooling or 'avg'}_pool")(x)
    mixed = keras.config.dtype_policy().name.startswith("mixed")
    return keras.layers.Dense(
        num_classes,
        activation=classifier_activation,
        dtype="float32" if mixed else None,
        name="predictions",
    )(x)


def check_head_arguments(include_top, num_classes, pooling, classifier_activation):
    """Validates the keras.applications-style head arguments shared by every builder."""
    check_choice("pooling", pooling, POOLINGS)
    if include_top and (
        not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1
    ):
        raise ValueError(f"num_classes={num_classes!r} must be a positive int.")
    if classifier_activation is not None:
        try:
            keras.activations.get(classifier_activation)
        except (ValueError, TypeError) as error:
            names = ["softmax", "sigmoid", "linear", None]
            raise ValueError(
                f"classifier_activation={classifier_activation!r} is not a Keras activation; "
                f"e.g. {names}."
            ) from error
