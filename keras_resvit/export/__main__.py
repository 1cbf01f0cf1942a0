"""The conversion subprocess of `export` under a backend other than TensorFlow:
`python -m keras_resvit.export JOB`, JOB the JSON list that `_convert_in_subprocess` writes."""

import json
import sys
from pathlib import Path

import numpy as np

from keras_resvit.export import _convert, _exit_with_parent
from keras_resvit.files import load_model

try:
    source, target, fmt, quant, images, scratch, names, parent = json.loads(sys.argv[1])
except (IndexError, ValueError, TypeError):
    sys.exit(
        "python -m keras_resvit.export is the conversion step of kr.export, which starts it "
        "itself; to export, run `keras-resvit export MODEL OUTPUT` or call kr.export."
    )
_exit_with_parent(parent)
calibration = np.load(images, allow_pickle=False) if images else None
_convert(load_model(source), Path(target), fmt, quant, calibration, scratch, names)
