"""The converters that need the TensorFlow backend: TF Lite options for each quantization, a
ViT's int8 TF Lite with its attention core kept in float32, and ONNX through tf2onnx.
"""

import contextlib
import json
import logging
import warnings
from pathlib import Path

import numpy as np

from keras_resvit.artifacts import without_tf_lite_notice
from keras_resvit.base.class_names import CLASS_NAMES_KEY
from keras_resvit.base.keras_fixes import patch_tf2onnx
from keras_resvit.base.lazy import tf
from keras_resvit.export.ownership import EXPORT_MARK, mark_value
from keras_resvit.models.common import classifier_activation

# A ViT's full-integer export keeps its attention core in float32: the two matmuls between
# activations (queries x keys, attention x values) and the softmax between them; convolutions,
# Dense layers, LayerNorms, GELUs and residual adds stay int8. One int8 scale per tensor resolves
# attention logits and weights coarsely, and TF Lite's default CPU delegate (XNNPACK, TF 2.21)
# miscomputes int8 BATCH_MATMUL between two activations (relative error 0.4-0.7; the reference
# kernel 0.02). Small ViTs trained on digits: top-1 agreement 90-98% all-int8, 98% with this.
VIT_INT8_FLOAT_OPS = ("BATCH_MATMUL", "SOFTMAX")
ONNX_OPSET = 17


def tflite_options(quantization, calibration):
    if quantization is None:
        return {}
    options = {"optimizations": [tf.lite.Optimize.DEFAULT]}
    if quantization == "float16":
        options["target_spec"] = {"supported_types": [tf.float16]}
    elif quantization == "int8":
        # Full-integer kernels; the float32 input and output keep the float model's interface.
        options["target_spec"] = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]}
        options["representative_dataset"] = lambda: ([image[None]] for image in calibration)
    return options


def int8_with_float_ops(model, calibration, float_ops, scratch):
    """Full-integer TF Lite bytes with the TF Lite op types `float_ops` kept in float32.

    Selective quantization needs the converter itself, which Keras' LiteRT export keeps
    inside; it is built from the SavedModel that Keras writes (into `scratch`) for the same
    serving function.
    """
    options = tflite_options("int8", calibration)
    saved = str(Path(scratch) / "saved_model")
    model.export(saved, format="tf_saved_model", verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    converter.optimizations = options["optimizations"]
    converter.representative_dataset = options["representative_dataset"]
    converter.target_spec.supported_ops = options["target_spec"]["supported_ops"]
    debug = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(float_ops))
    with without_tf_lite_notice():  # the debugger runs a `tf.lite.Interpreter`
        quantizer = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_options=debug
        )
        return quantizer.get_nondebug_quantized_model()


def _not_a_deprecation_notice(record) -> bool:
    return "is deprecated and will be removed" not in record.getMessage()


@contextlib.contextmanager
def _quiet_tf2onnx():
    """Silences, for the conversion only, TensorFlow's notices that the TF1 functions tf2onnx
    calls are deprecated, and NumPy's `np.object` FutureWarning from Keras' tf2onnx patch: a
    user of this package has nothing to change."""
    logger = logging.getLogger("tensorflow")
    logger.addFilter(_not_a_deprecation_notice)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "In the future `np.object`", FutureWarning)
            yield
    finally:
        logger.removeFilter(_not_a_deprecation_notice)


def convert_onnx(model, target, scratch, class_names):
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    saved = str(Path(scratch) / "saved_model")
    model.export(saved, format="tf_saved_model", verbose=False)
    loaded = tf.saved_model.load(saved)
    with _quiet_tf2onnx():
        patch_tf2onnx()  # tf2onnx still uses NumPy 1 aliases; Keras ships this patch.
        # Freezing inlines variables and captured constants, so the only input is the image.
        frozen = convert_variables_to_constants_v2(loaded.signatures["serving_default"])
        proto, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(),
            input_names=[t.name for t in frozen.inputs],
            output_names=[t.name for t in frozen.outputs],
            opset=ONNX_OPSET,
            custom_op_handlers={"Erfc": (_erfc_as_one_minus_erf, [])},
        )
    if class_names is not None:
        proto.metadata_props.add(key=CLASS_NAMES_KEY, value=json.dumps(class_names))
    proto.metadata_props.add(key=EXPORT_MARK, value=mark_value(classifier_activation(model)))
    Path(target).write_bytes(proto.SerializeToString())


def _erfc_as_one_minus_erf(ctx, node, name, args):
    """tf2onnx has no Erfc (TensorFlow's exact GELU uses it): rewrite it as 1 - Erf(x)."""
    from tf2onnx import utils

    node.type = "Erf"
    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype=dtype))
    ctx.insert_new_node_on_output(
        "Sub", node.output[0], name=utils.make_name(name), inputs=[one.output[0], node.output[0]]
    )
