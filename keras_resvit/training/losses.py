"""The recipes' losses beyond Keras' cross-entropies: binary cross-entropy over every class, as
"ResNet strikes back" (Wightman et al. 2021) and DeiT III train."""

import keras
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
