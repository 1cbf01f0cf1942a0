"""LoRA models through `kr.train`: a killed run resumes with its factors, a loaded model is
refused until its factors can learn again, and replicas train what the model trains."""

from types import SimpleNamespace

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.models.lora import enable_lora, idle_lora_layers
from keras_resvit.training.model_setup import model_for_run
from tests.conftest import tiny_vit
from tests.training.test_train import Interrupt

RUN = {"batch_size": 16, "epochs": 3, "save_every": 3, "verbose": 0}


def _lora_resnet(seed=0):
    keras.utils.set_random_seed(seed)  # the same initial weights (and factors) every call
    return enable_lora(kr.build_resnet(8, stem="cifar", width=0.5), 2, targets=("conv",))


def _lora_vit(seed=0):
    keras.utils.set_random_seed(seed)
    return enable_lora(tiny_vit(num_classes=10), 2, targets=("attention",))


def _values(model, name=None):
    return [
        keras.ops.convert_to_numpy(v)
        for v in model.weights
        if name is None or v.path.endswith(name)
    ]


def test_a_killed_lora_run_resumes_with_its_factors(arrays, tmp_path):
    # Keras' weights files hold each LoRA kernel with its update merged in and load both
    # factors as zero: resumed from them alone, the factors (no gradient at zero) stayed
    # near zero for the rest of the run.
    whole = kr.train(_lora_resnet(), arrays[0], output_dir=tmp_path / "whole", **RUN)
    with pytest.raises(KeyboardInterrupt):
        kr.train(_lora_resnet(), arrays[0], output_dir=tmp_path / "b", callbacks=[Interrupt(7)],
                 **RUN)  # fmt: skip
    assert (tmp_path / "b" / "resume" / "step6.lora.npz").is_file()
    resumed = kr.train(_lora_resnet(), arrays[0], output_dir=tmp_path / "b", **RUN)
    assert resumed.summary["resumed_from_step"] == 6
    factors = _values(resumed.model, "lora_kernel_b")
    assert min(float(np.abs(b).sum()) for b in factors) > 0
    for got, want in zip(_values(resumed.model), _values(whole.model), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    # Only the run's own files are left: the LoRA file went with the resume state.
    assert not (tmp_path / "b" / "resume").exists()


def test_a_loaded_lora_model_trains_only_after_enable_lora_again(arrays, tmp_path):
    _lora_vit().save(tmp_path / "lora.keras")
    loaded = keras.saving.load_model(tmp_path / "lora.keras")
    # Two blocks' query, key, value and output projections, both factors zero.
    assert len(idle_lora_layers(loaded)) == 8
    with pytest.raises(ValueError, match=r"enable_lora\(model, rank, targets\) again") as error:
        kr.train(loaded, arrays[0], output_dir=tmp_path / "run", **RUN)
    assert "and 7 more" in str(error.value)
    assert not (tmp_path / "run").exists()

    enable_lora(loaded, 2, targets=("attention",))
    before = _values(loaded, "attention/query/bias")
    trained = kr.train(loaded, arrays[0], output_dir=tmp_path / "run", **RUN).model
    assert min(float(np.abs(b).sum()) for b in _values(trained, "lora_kernel_b")) > 0
    # enable_lora froze the projections' biases again (Keras saves no per-variable flag).
    assert len(before) == 2
    for got, want in zip(_values(trained, "attention/query/bias"), before, strict=True):
        np.testing.assert_array_equal(got, want)


def test_replicas_train_the_variables_the_model_trains():
    # With several replicas the model is cloned into the strategy's scope; a clone takes
    # its layers' `trainable` from their configs, which do not hold the frozen biases of the
    # layers enable_lora adapts.
    model = _lora_vit()
    clone = model_for_run(model, None, SimpleNamespace(num_replicas=2))
    assert clone is not model
    names = [v.path for v in clone.trainable_weights]
    assert names == [v.path for v in model.trainable_weights]
    assert len(names) == 8 * 2 + 2  # two factors per projection (2 blocks x 4), the head
