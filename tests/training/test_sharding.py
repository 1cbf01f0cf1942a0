"""Model parallelism: the layouts of ViT and ResNet kernels, and sharded training matching
single-device training on a 2×4 mesh of simulated devices."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.training.sharding import (
    RULES,
    _DivisibleModelParallel,
    device_mesh,
    layout_map,
    model_parallel_distribution,
)
from tests.conftest import TINY_VIT, simulated_devices

# Names only: a LayoutMap is data, so a 2×4 mesh needs no devices until variables are placed.
EIGHT = [f"cpu:{i}" for i in range(8)]
M = "model"
TINY_RESNET = {"depth": 8, "stem": "cifar", "num_classes": 4, "input_shape": (16, 16, 3)}


def layouts_of(model, layouts):
    """Path -> the axes a variable is split along, or None where it is replicated."""
    return {
        v.path: layouts[v.path].axes if layouts[v.path] is not None else None
        for v in model.variables
    }


def test_vit_kernels_split_megatron_style():
    """Shoeybi et al. (2019), §3: query/key/value column-parallel by heads, the output
    projection row-parallel over the same heads; MLP dense1 by columns, dense2 by rows."""
    model = kr.build_vit(**TINY_VIT)
    found = layouts_of(model, layout_map(model, device_mesh(4, EIGHT)))
    sharded = {}
    for block in (1, 2):
        prefix = f"encoder_block{block}_"
        for projection in ("query", "key", "value"):
            sharded[f"{prefix}attention/{projection}/kernel"] = (None, M, None)
            sharded[f"{prefix}attention/{projection}/bias"] = (M, None)
        sharded[f"{prefix}attention/attention_output/kernel"] = (M, None, None)
        sharded[f"{prefix}mlp_dense1/kernel"] = (None, M)
        sharded[f"{prefix}mlp_dense1/bias"] = (M,)
        sharded[f"{prefix}mlp_dense2/kernel"] = (M, None)
    assert {path: axes for path, axes in found.items() if axes} == sharded
    replicated = {path for path, axes in found.items() if axes is None}
    assert {"patch_embedding/kernel", "position_embedding/embeddings", "class_token/token"} < (
        replicated
    )
    assert {"encoder_block1_mlp_dense2/bias", "encoder_norm/gamma", "predictions/kernel"} < (
        replicated
    )


def test_vit_heads_the_model_axis_does_not_divide_are_replicated():
    model = kr.build_vit(**{**TINY_VIT, "num_heads": 2, "num_layers": 1})  # 2 heads, axis 4
    found = layouts_of(model, layout_map(model, device_mesh(4, EIGHT)))
    assert {path: axes for path, axes in found.items() if axes} == {
        "encoder_block1_mlp_dense1/kernel": (None, M),
        "encoder_block1_mlp_dense1/bias": (M,),
        "encoder_block1_mlp_dense2/kernel": (M, None),
    }
    # The same model on a 2-device model axis splits its heads.
    found = layouts_of(model, layout_map(model, device_mesh(2, EIGHT)))
    assert found["encoder_block1_attention/attention_output/kernel"] == (M, None, None)


def test_resnet_convolutions_split_output_channels_where_they_divide():
    # width 0.375: 6 filters in stage 1 (4 does not divide them), 12 and 24 in stages 2 and 3;
    # SE reduces 6, 12, 24 channels to 1, 3, 6.
    model = kr.build_resnet(**TINY_RESNET, width=0.375, se_ratio=0.25)
    found = layouts_of(model, layout_map(model, device_mesh(4, EIGHT)))
    conv = (None, None, None, M)
    expected = {}
    for stage in (2, 3):
        prefix = f"stage{stage}_block1_"
        expected.update({f"{prefix}conv1/kernel": conv, f"{prefix}conv2/kernel": conv})
        expected.update({f"{prefix}se_expand/kernel": conv, f"{prefix}se_expand/bias": (M,)})
    assert {path: axes for path, axes in found.items() if axes} == expected
    assert found["stem_conv/kernel"] is None and found["stage1_block1_conv1/kernel"] is None
    assert found["stage2_block1_bn1/gamma"] is None and found["predictions/kernel"] is None


@pytest.mark.parametrize(
    "build",
    [
        lambda: kr.build_vit(**TINY_VIT),
        lambda: kr.build_resnet(50, input_shape=(32, 32, 3), num_classes=4),
        lambda: kr.build_resnet(50, version="v2", input_shape=(32, 32, 3), num_classes=4),
        lambda: kr.create_model("bit_r50x1", input_shape=(32, 32, 3), num_classes=4),
        lambda: kr.create_model("se_resnet50", input_shape=(32, 32, 3), num_classes=4),
        lambda: kr.build_hybrid_vit("r50", "Ti/16", image_size=32, num_classes=4),
    ],
    ids=["vit", "resnet50", "resnet50v2", "bit", "se_resnet50", "hybrid"],
)
def test_default_patterns_match_the_builders_names(build):
    """Without a model, the family patterns give each variable the layout that reading the
    model gives (where its dimensions divide)."""
    model = build()
    mesh = device_mesh(4, EIGHT)
    defaults = layouts_of(model, layout_map(None, mesh))
    read = layouts_of(model, layout_map(model, mesh))
    assert any(read.values())
    assert {path: axes for path, axes in defaults.items() if read[path]} == {
        path: axes for path, axes in read.items() if axes
    }
    assert set(defaults) - {path for path, axes in defaults.items() if axes} >= {
        "predictions/kernel"
    }


def test_default_map_keys_are_the_family_patterns():
    layouts = layout_map(None, device_mesh(4, EIGHT))
    assert list(layouts) == [pattern for family in RULES.values() for pattern, _, _ in family]
    assert layouts["encoder_block32_attention/key/kernel"].axes == (None, M, None)
    assert layouts["backbone/stage4_block3_shortcut_conv/kernel"].axes == (None, None, None, M)
    assert layouts["stem_conv/kernel"].axes == (None, None, None, M)
    assert layouts["patch_embedding/kernel"] is None
    assert layouts["encoder_block1_mlp_dense1/output"] is None  # layer outputs keep theirs


@pytest.mark.parametrize(
    "devices, model_parallelism, shape",
    [(8, None, (2, 4)), (6, None, (3, 2)), (1, None, (1, 1)), (8, 8, (1, 8)), (8, 2, (4, 2))],
)
def test_device_mesh_shape(devices, model_parallelism, shape):
    mesh = device_mesh(model_parallelism, EIGHT[:devices])
    assert mesh.shape == shape and mesh.axis_names == ("batch", "model")
    names = device_mesh(devices=EIGHT, model_axis="tensor", batch_axis="data").axis_names
    assert names == ("data", "tensor")


def test_layout_map_takes_an_int_or_no_mesh():
    devices = keras.distribution.list_devices()
    assert layout_map().device_mesh.shape == device_mesh().shape
    assert layout_map(mesh=1).device_mesh.shape == (len(devices), 1)


def test_bad_arguments_name_the_argument_and_the_valid_values():
    with pytest.raises(ValueError, match=r"model_parallelism=3 must divide the 8 devices; "):
        device_mesh(3, EIGHT)
    with pytest.raises(ValueError, match=r"valid values: \[1, 2, 4, 8\]"):
        device_mesh(16, EIGHT)
    with pytest.raises(ValueError, match="model_parallelism=0 must be a positive int"):
        device_mesh(0, EIGHT)
    for devices in ([], ["banana"], [0], ["cpu:0", "cpu:0"], "cpu:0"):
        with pytest.raises(ValueError, match=re.escape(f"devices={devices!r} must be a non-empty")):
            device_mesh(devices=devices)
    with pytest.raises(ValueError, match="model_axis='batch' must differ from batch_axis"):
        device_mesh(devices=EIGHT, model_axis="batch")
    with pytest.raises(ValueError, match="mesh='2x4' is not valid; expected a keras.distri"):
        layout_map(mesh="2x4")
    devices = len(keras.distribution.list_devices())
    with pytest.raises(ValueError, match=f"mesh={devices + 1} must divide the {devices} devices"):
        layout_map(mesh=devices + 1)
    data_only = keras.distribution.DeviceMesh((8,), ("data",), EIGHT)
    with pytest.raises(ValueError, match=r"model_axis='model' is not an axis .*\['data'\]"):
        layout_map(mesh=data_only)
    with pytest.raises(ValueError, match="model of type str is not valid"):
        layout_map("vit_ti16", device_mesh(4, EIGHT))


def test_model_parallel_distribution_is_jax_only(backend):
    if backend != "jax":
        with pytest.raises(ValueError, match=f"needs the JAX backend.*'{backend}'"):
            model_parallel_distribution()
        return
    distribution, replicas = model_parallel_distribution()
    assert isinstance(distribution, keras.distribution.ModelParallel)
    assert replicas == distribution.device_mesh.shape[0] and distribution.batch_dim_name == "batch"
    with distribution.scope():
        model = kr.build_vit(**TINY_VIT)
    kernel = next(v for v in model.variables if v.path.endswith("mlp_dense1/kernel"))
    layout = distribution.get_variable_layout(kernel)
    assert layout.axes == (None, M)
    assert kernel.value.sharding.is_equivalent_to(layout.backend_layout, 2)


def test_distribution_without_a_model_replicates_what_does_not_divide(backend):
    """The family patterns on a 4-device model axis, for a ViT of 2 heads and a ResNet of 6
    channels in its first stage: each variable gets the layout that reading the model gives."""
    if backend != "jax":
        pytest.skip("ModelParallel is JAX's (the error elsewhere is tested above)")
    # The distribution model_parallel_distribution makes, on names only: it would refuse
    # devices this process lacks (tests/training/test_sharding_devices.py).
    mesh = device_mesh(4, EIGHT)
    distribution = _DivisibleModelParallel(
        layout_map=layout_map(None, mesh), batch_dim_name="batch"
    )
    for model in (
        kr.build_vit(**{**TINY_VIT, "num_heads": 2, "num_layers": 1}),
        kr.build_resnet(**TINY_RESNET, width=0.375, se_ratio=0.25),
    ):
        read = layouts_of(model, layout_map(model, mesh))
        placed = {v.path: distribution.get_variable_layout(v).axes for v in model.variables}
        assert placed == {v.path: read[v.path] or (None,) * len(v.shape) for v in model.variables}


SHARDED_TRAINING = """
import json, sys, keras, numpy as np
import keras_resvit as kr
from keras_resvit.training.sharding import layout_map, model_parallel_distribution

def spec(variable):
    axes = tuple(variable.value.sharding.spec)
    return list(axes + (None,) * (len(variable.shape) - len(axes)))

def losses(model, x, y):
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss="sparse_categorical_crossentropy")
    fit = model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)
    return fit.history["loss"]

reply = {"devices": len(keras.distribution.list_devices())}
for family, build, size in (("vit", kr.build_vit, 32), ("resnet", kr.build_resnet, 16)):
    kwargs = json.loads(sys.argv[1])[family]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, size, size, 3)).astype("float32")
    y = rng.integers(0, 4, 16)
    keras.utils.set_random_seed(0)
    single = build(**kwargs)
    distribution, replicas = model_parallel_distribution(model_parallelism=4)
    declared = layout_map(single, distribution.device_mesh)
    with distribution.scope():
        sharded = build(**kwargs)
        built = {v.path: spec(v) for v in sharded.variables}
        sharded.set_weights(single.get_weights())
        sharded_losses = losses(sharded, x, y)
    reply[family] = {
        "replicas": replicas,
        "declared": {v.path: list(declared[v.path].axes) if declared[v.path] else
                     [None] * len(v.shape) for v in single.variables},
        "built": built,
        "trained": {v.path: spec(v) for v in sharded.variables},
        "sharded": sharded_losses,
        "single": losses(single, x, y),
    }
print(json.dumps(reply))
"""


@pytest.mark.slow
def test_sharded_training_matches_single_device(backend):
    """On a 2×4 (batch × model) mesh of 8 simulated CPU devices, a tiny ViT's and ResNet's
    variables carry the declared layouts and SGD gives the single-device losses."""
    if backend != "jax":
        pytest.skip("runs JAX in a subprocess whatever the backend: once, in the JAX pass")
    models = {"vit": {**TINY_VIT, "num_classes": 4}, "resnet": TINY_RESNET}
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": simulated_devices(8),
    }
    result = subprocess.run(
        [sys.executable, "-c", SHARDED_TRAINING, json.dumps(models)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reply = json.loads(result.stdout.strip().splitlines()[-1])
    assert reply["devices"] == 8
    for family in models:
        run = reply[family]
        assert run["replicas"] == 2
        assert run["built"] == run["declared"] == run["trained"]
        # Two ViT blocks of 10 split variables; the ResNet's stem and six 3x3 convolutions.
        assert (
            sum(M in axes for axes in run["declared"].values()) == {"vit": 20, "resnet": 7}[family]
        )
        np.testing.assert_allclose(run["sharded"], run["single"], atol=1e-4)
        assert run["single"][-1] < run["single"][0]
