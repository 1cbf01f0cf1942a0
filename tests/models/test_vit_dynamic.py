"""ViTs of any input size (`image_size=None`, timm's `dynamic_img_size`): the position
embeddings are resampled to each input's grid when the model runs, so one model computes at
every size what `resize_vit` bakes in for that size."""

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.weights import load_weights
from tests.conftest import TINY_VIT, assert_save_load_identical, random_images
from tests.models.test_hybrid import TINY as TINY_HYBRID
from tests.weights.torch_layout import vit_state_dict

ANY = {**TINY_VIT, "image_size": None}


def randomized(model, seed=0):
    """Every weight random (the classifier starts at zero, the class token too)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(0, 0.3, tuple(variable.shape)).astype("float32"))
    return model


def numpy_out(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def test_one_model_at_three_sizes_equals_resize_vit_at_each():
    model = randomized(kr.build_vit(**ANY))
    assert model.input_shape == (None, None, None, 3)
    # The embeddings are stored for a 224-pixel image: a fixed model at 224 with the same
    # weights is the same model, and resize_vit of it at each size is the reference.
    fixed = kr.build_vit(**{**ANY, "image_size": 224})
    fixed.set_weights(model.get_weights())
    assert model.get_layer("position_embedding").grid_size == (28, 28)
    for height, width in [(32, 32), (48, 64), (96, 40)]:
        x = random_images(2, height, width, seed=height)
        want = numpy_out(kr.resize_vit(fixed, (height, width)), x)
        # predict: the compiled path, a TensorFlow graph of unknown size on TensorFlow.
        np.testing.assert_allclose(model.predict(x, verbose=0), want, atol=1e-5)
    np.testing.assert_allclose(numpy_out(model, x), want, atol=1e-5)  # and called eagerly


def test_at_its_stored_grid_it_is_the_fixed_model_with_the_papers_parameter_count():
    # timm's vit_base_patch16_224 (86,567,656 parameters; dynamic_img_size adds none).
    with keras.StatelessScope(initialize_variables=False):
        assert kr.create_model("vit_b16", image_size=None).count_params() == 86_567_656
    model = randomized(kr.build_vit(**ANY))
    fixed = kr.build_vit(**{**ANY, "image_size": 224})
    assert [w.shape for w in fixed.weights] == [w.shape for w in model.weights]
    fixed.set_weights(model.get_weights())
    x = random_images(1, 224, 224)
    np.testing.assert_allclose(numpy_out(model, x), numpy_out(fixed, x), atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        {"pooling": "map", "num_registers": 2, "layer_scale_init": 0.5, "qk_norm": True},
        {"position_embedding": "sincos2d", "pooling": "gap"},
    ],
    ids=["map_registers", "sincos2d"],
)
def test_options_follow_the_input_grid(options):
    fixed = randomized(kr.build_vit(**{**TINY_VIT, **options}))  # 32 px: a 4x4 grid stored
    model = kr.resize_vit(fixed, (None, None))
    assert model.get_layer("position_embedding").grid_size == (4, 4)
    for height, width in [(32, 32), (24, 56)]:
        x = random_images(2, height, width, seed=width)
        want = numpy_out(kr.resize_vit(fixed, (height, width)), x)
        np.testing.assert_allclose(model.predict(x, verbose=0), want, atol=1e-5)


def test_a_hybrid_of_any_size_follows_its_feature_map():
    fixed = randomized(kr.build_hybrid_vit("r50", **TINY_HYBRID), seed=1)
    model = kr.resize_vit(fixed, (None, None))
    x = random_images(1, 48, 32)  # not the 32x32 it was built for, nor square
    want = numpy_out(kr.resize_vit(fixed, (48, 32)), x)
    np.testing.assert_allclose(numpy_out(model, x), want, rtol=1e-4, atol=1e-4)


def test_resize_vit_opens_and_bakes_sizes_and_patch_sizes():
    fixed = randomized(kr.build_vit(**TINY_VIT))
    model = kr.resize_vit(fixed, (None, None))
    again = kr.resize_vit(model, 32)  # the stored grid baked in again: the same weights
    assert again.input_shape == (None, 32, 32, 3)
    for a, b in zip(again.get_weights(), fixed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = random_images(2, 48, 48)
    np.testing.assert_allclose(
        numpy_out(kr.resize_vit(model, 48), x), numpy_out(model, x), atol=1e-5
    )
    # FlexiViT on a model of any size: patch 8 -> 16 keeps any size, the grid over 32 px.
    flexi = kr.resize_vit(model, patch_size=16)
    assert flexi.input_shape == (None, None, None, 3)
    assert flexi.get_layer("position_embedding").grid_size == (2, 2)
    assert flexi.get_layer("patch_embedding").kernel.shape == (16, 16, 3, 32)
    with pytest.raises(ValueError, match=r"grid of 32 is not divisible by the patch size 12"):
        kr.resize_vit(model, patch_size=12)


def test_keras_file_round_trip_at_two_sizes(tmp_path):
    model = randomized(kr.build_vit(**ANY))
    for size in (32, 40):
        restored = assert_save_load_identical(model, tmp_path, random_images(2, size, size))
    assert restored.input_shape == (None, None, None, 3)
    assert restored.get_layer("position_embedding").dynamic_size


def test_it_trains_on_batches_of_two_sizes():
    model = kr.build_vit(**{**ANY, "num_classes": 3})
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    before = keras.ops.convert_to_numpy(model.get_layer("position_embedding").embeddings)
    labels = np.array([0, 1, 2, 0])
    losses = []
    for size in (32, 48, 32, 48):
        x = random_images(4, size, size, seed=size)
        losses.append(model.train_on_batch(x, labels))
    assert np.isfinite(losses).all() and losses[2] < losses[0] and losses[3] < losses[1]
    after = keras.ops.convert_to_numpy(model.get_layer("position_embedding").embeddings)
    assert np.abs(after - before).max() > 0  # the resampled embeddings get gradients


def test_weights_from_a_checkpoint_keep_its_grid(tmp_path):
    source = randomized(kr.build_vit(**{**TINY_VIT, "image_size": 16}))
    path = tmp_path / "vit.npz"
    np.savez(path, **vit_state_dict(source))
    model = load_weights(path, num_heads=4, image_size=None)
    assert model.input_shape == (None, None, None, 3)
    assert model.get_layer("position_embedding").grid_size == (2, 2)  # not resampled to 224's
    for size in (16, 24):
        x = random_images(2, size, size)
        want = numpy_out(kr.resize_vit(source, size), x)
        np.testing.assert_allclose(numpy_out(model, x), want, atol=1e-5)


def test_attention_rollout_maps_each_inputs_grid():
    model = randomized(kr.build_vit(**ANY))
    assert kr.viz.attention_rollout(model, random_images(1, 40, 24)).shape == (1, 5, 3)


def test_export_names_the_way_to_a_fixed_size(tmp_path):
    model = kr.build_vit(**ANY)
    with pytest.raises(ValueError, match=r"kr\.resize_vit\(model, image_size\)"):
        kr.export(model, tmp_path / "any.tflite")
    assert not (tmp_path / "any.tflite").exists()


@pytest.mark.one_backend(
    "tensorflow",
    reason="a TensorFlow conversion of a fixed-size ViT; the model computes the same on both "
    "backends (the tests above)",
)
def test_a_model_of_any_size_exports_at_a_fixed_size_and_passes_the_check(tmp_path):
    model = randomized(kr.build_vit(**ANY), seed=2)
    for variable in model.weights:  # smaller weights: activations of a trained model's size
        variable.assign(variable * 0.3)
    result = kr.export(kr.resize_vit(model, 48), tmp_path / "model.tflite")
    assert result["checked"] and result["max_abs_difference"] < 1e-4


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: kr.build_vit(**{**ANY, "image_size": (None, 32)}), "image_size=(None, 32)"),
        (lambda: kr.build_vit(**{**ANY, "image_size": 0}), "image_size=0"),
        (lambda: kr.build_vit(**{**ANY, "image_size": (0, 0)}), "image_size=(0, 0)"),
        (lambda: kr.build_vit(**{**ANY, "image_size": ()}), "image_size=()"),
        (
            lambda: kr.build_vit(**{**ANY, "preprocessing": "pixel_mean"}),
            "image_size=None: preprocessing='pixel_mean' subtracts a mean image",
        ),
        # At call time, a size the patches do not divide (a Conv2D would crop it silently).
        (lambda: kr.build_vit(**ANY)(random_images(1, 36, 32)), "images of 36x32 pixels"),
        (lambda: kr.build_vit(**ANY)(random_images(1, 32, 20)), "a width a multiple of 8"),
    ],
    ids=[
        "half_none",
        "zero",
        "zero_pair",
        "empty",
        "pixel_mean",
        "height_not_divided",
        "width_not_divided",
    ],
)
def test_bad_sizes_get_one_clear_error(call, words):
    with pytest.raises(ValueError, match=None) as info:
        call()
    assert words in str(info.value)


def test_a_bad_size_is_refused_after_the_model_has_run_at_other_sizes(backend):
    """Keras' TensorFlow trainer traces one graph for the sizes it has seen (32 and 48 here),
    in which the sizes are unknown: the graph checks them when it runs."""
    model = kr.build_vit(**ANY)
    model.compile()  # jit_compile="auto": XLA where Keras would choose it (not for TensorFlow)
    assert model.get_layer("position_embedding").supports_jit == (backend != "tensorflow")
    for side in (32, 48, 32, 48):
        assert model.predict(random_images(2, side, side), verbose=0).shape == (2, 5)
    with pytest.raises(Exception, match="images of 36x32 pixels|these images do not divide"):
        model.predict(random_images(2, 36, 32), verbose=0)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_the_patch_embedding_refuses_a_size_unknown_until_the_graph_runs(jit_compile):
    """XLA compiles assertions away: there the failing node names the rule."""
    inputs = keras.Input((None, None, 3))
    x = kr.layers.PatchEmbedding(8, 4, strides=4)(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    model.compile(jit_compile=jit_compile)
    for side in (8, 12, 8, 12):
        assert model.predict(random_images(2, side, side), verbose=0).shape == (2, 8)
    words = "do not divide into 4x4 patches|height_and_width_must_be_multiples_of_the_patch_size"
    with pytest.raises(Exception, match=words):
        model.predict(random_images(2, 10, 8), verbose=0)
