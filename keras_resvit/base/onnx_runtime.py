"""ONNX files on onnxruntime (the `onnx` extra): one session maker for the export's check,
`predict` and the class names inside a file."""


def onnx_session(path):
    """An onnxruntime session of the ONNX file `path` on the CPU provider.

    Raises:
        ImportError: onnxruntime is not installed (naming the extra that installs it).
    """
    try:
        import onnxruntime
    except ImportError as error:
        raise ImportError(
            "running an ONNX file needs onnxruntime; install it with `pip install "
            "keras-resvit[onnx]`."
        ) from error
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
