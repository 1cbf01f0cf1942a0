"""The recipes' losses beyond Keras' cross-entropies: the cross-entropy of a softmax's
probabilities, the same on every backend, and binary cross-entropy over every class, as
"ResNet strikes back" (Wightman et al. 2021) and DeiT III train."""

import keras
import numpy as np
from keras import ops

from keras_resvit.base.validation import check_number, check_rate


@keras.saving.register_keras_serializable(package="keras_resvit")
class MultiLabelBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy of every class's score against its one-hot or mixed target
    (timm's `BinaryCrossEntropy`).

    Wightman et al. (2021): with MixUp and CutMix the classes mixed into an image are treated
    as all present, a multi-label problem: each class gets its own sigmoid. The
    targets are optionally smoothed (`label_smoothing`: `y * (1 - s) + s / classes`, as the
    categorical loss; for integer labels only, MixUp pipelines smooth before mixing) and then
    thresholded (`target_threshold`: 1 above it, 0 otherwise; timm's `--bce-target-thresh`,
    0.2 in its RSB runs). The loss is the mean over examples and classes.

    Args:
        target_threshold: threshold of the targets, or None to keep them as they are.
        label_smoothing: smoothing of the targets before the threshold, in [0, 1).
        from_logits: the scores are logits (the recipes' models end without activation).
        **kwargs: arguments of `keras.losses.Loss` (`name`, `reduction`, `dtype`).

    Example:
    >>> from keras_resvit.training.losses import MultiLabelBinaryCrossentropy
    >>> loss = MultiLabelBinaryCrossentropy(target_threshold=0.2)
    >>> round(float(loss([[0.7, 0.3, 0.0]], [[0.0, 0.0, 0.0]])), 4)  # targets -> [1, 1, 0]
    0.6931
    """

    def __init__(
        self,
        target_threshold=None,
        label_smoothing=0.0,
        from_logits=True,
        name="multi_label_binary_crossentropy",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        check_number("target_threshold", target_threshold, 0, 1, none_ok=True)
        check_rate("label_smoothing", label_smoothing)
        self.target_threshold = target_threshold
        self.label_smoothing = label_smoothing
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.cast(y_true, y_pred.dtype)
        if self.label_smoothing:
            classes = ops.cast(ops.shape(y_pred)[-1], y_pred.dtype)
            y_true = y_true * (1.0 - self.label_smoothing) + self.label_smoothing / classes
        if self.target_threshold is not None:
            y_true = ops.cast(y_true > self.target_threshold, y_pred.dtype)
        return keras.losses.binary_crossentropy(y_true, y_pred, from_logits=self.from_logits)

    def get_config(self):
        return {
            **super().get_config(),
            "target_threshold": self.target_threshold,
            "label_smoothing": self.label_smoothing,
            "from_logits": self.from_logits,
        }


# The smallest normal float32: log(p) stays finite, and so does 1 / p in its gradient.
_TINY = float(np.finfo("float32").tiny)


@keras.saving.register_keras_serializable(package="keras_resvit")
class SoftmaxCrossentropy(keras.losses.Loss):
    """Cross-entropy of a softmax's probabilities against integer, one-hot or mixed labels,
    the same number on every backend.

    Keras' cross-entropy of probabilities is computed from the softmax's logits on TensorFlow
    (which it reads off the output) and from probabilities clipped at 1e-7 on JAX and PyTorch,
    so an example whose class gets a probability below 1e-7 weighs at most 16.1 there, with
    no gradient, and more on TensorFlow (a model's loss then depended on the backend). Here
    the probabilities are clipped only where float32 cannot take their logarithm (below about
    1.2e-38, a logit 87 below the largest): -log p of the normalized probabilities, as
    `from_logits` would give, on every backend.

    Args:
        sparse: the labels are class indices (`SparseCategoricalCrossentropy`'s), else
            one-hot or mixed rows.
        label_smoothing: smoothing of the targets, `y * (1 - s) + s / classes`, in [0, 1).
        **kwargs: arguments of `keras.losses.Loss` (`name`, `reduction`, `dtype`).

    Example:
    >>> from keras_resvit.training.losses import SoftmaxCrossentropy
    >>> loss = SoftmaxCrossentropy(sparse=True)
    >>> round(float(loss([1], [[0.25, 0.5, 0.25]])), 4)  # -log 0.5
    0.6931
    >>> round(float(loss([0], [[1e-20, 1.0, 0.0]])), 2)  # Keras: 16.12 on JAX
    46.05
    """

    def __init__(self, sparse=False, label_smoothing=0.0, name="softmax_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        check_rate("label_smoothing", label_smoothing)
        self.sparse = bool(sparse)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        y_pred = y_pred / ops.sum(y_pred, axis=-1, keepdims=True)
        classes = ops.shape(y_pred)[-1]
        if self.sparse:
            y_true = ops.convert_to_tensor(y_true)
            if len(y_true.shape) == len(y_pred.shape):  # (batch, 1)
                y_true = ops.squeeze(y_true, axis=-1)
            y_true = ops.one_hot(ops.cast(y_true, "int32"), classes, dtype=y_pred.dtype)
        y_true = ops.cast(y_true, y_pred.dtype)
        if self.label_smoothing:
            share = self.label_smoothing / ops.cast(classes, y_pred.dtype)
            y_true = y_true * (1.0 - self.label_smoothing) + share
        return -ops.sum(y_true * ops.log(ops.clip(y_pred, _TINY, 1.0)), axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "sparse": self.sparse,
            "label_smoothing": self.label_smoothing,
        }
