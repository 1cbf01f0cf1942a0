"""The "ResNet strikes back" recipes A1, A2 and A3: the paper's values, LAMB and binary
cross-entropy as timm computes them, and `kr.train` compiling a model with them."""

import json

import keras
import numpy as np
import pytest

import keras_resvit as kr
from keras_resvit.data.augmentation import MIXING
from keras_resvit.layers import DropPath, RandAugment, RandomResizedCrop
from keras_resvit.training.losses import MultiLabelBinaryCrossentropy
from keras_resvit.training.optimizers import CoupledDecayLamb
from keras_resvit.training.recipes import Recipe, get_recipe, recipe_model_options
from keras_resvit.training.schedules import recipe_schedule

# Wightman, Touvron and Jegou (2021), "ResNet strikes back: An improved training procedure in
# timm", arXiv:2110.00476, Table 1, columns A1 / A2 / A3: train resolution 224 / 224 / 160
# (tested at 224), epochs 600 / 300 / 100, batch 2048, LAMB, lr 5e-3 / 5e-3 / 8e-3, cosine
# decay, weight decay 0.01 / 0.02 / 0.02, 5 warm-up epochs, label smoothing 0.1 / - / -,
# stochastic depth 0.05 / 0.05 / -, repeated augmentation yes / yes / no, flip and
# random-resized crop, RandAugment 7/0.5 / 7/0.5 / 6/0.5, MixUp 0.2 / 0.1 / 0.1, CutMix 1.0,
# binary cross-entropy; no dropout, erasing, colour jitter or EMA.
PAPER = {
    "rsb_a1": {
        "size": 224,
        "epochs": 600,
        "lr": 5e-3,
        "wd": 0.01,
        "smoothing": 0.1,
        "drop_path": 0.05,
        "repeated": True,
        "randaugment": 7,
        "mixup": 0.2,
    },
    "rsb_a2": {
        "size": 224,
        "epochs": 300,
        "lr": 5e-3,
        "wd": 0.02,
        "smoothing": 0.0,
        "drop_path": 0.05,
        "repeated": True,
        "randaugment": 7,
        "mixup": 0.1,
    },
    "rsb_a3": {
        "size": 160,
        "epochs": 100,
        "lr": 8e-3,
        "wd": 0.02,
        "smoothing": 0.0,
        "drop_path": 0.0,
        "repeated": False,
        "randaugment": 6,
        "mixup": 0.1,
    },
}
# Not in Table 1, from the timm training the paper ran (its `train.py` arguments for these
# recipes): targets thresholded at 0.2 (`--bce-target-thresh 0.2`), 3 repeats
# (`--aug-repeats 3`), and timm's `Lamb`, which clips the global gradient norm at 1.0.
TIMM_TARGET_THRESHOLD, TIMM_REPEATS, TIMM_LAMB_CLIPNORM = 0.2, 3, 1.0


@pytest.mark.parametrize("name", sorted(PAPER))
def test_recipe_values_are_the_papers_table(name):
    paper, recipe = PAPER[name], get_recipe(name)
    assert (recipe.optimizer, recipe.batch_size, recipe.schedule) == ("lamb", 2048, "cosine")
    assert recipe.loss == "binary_cross_entropy"
    assert recipe.target_threshold == TIMM_TARGET_THRESHOLD
    assert recipe.image_size == paper["size"] and recipe.epochs == paper["epochs"]
    assert recipe.learning_rate == paper["lr"] and recipe.weight_decay == paper["wd"]
    assert recipe.warmup * recipe.epochs == pytest.approx(5)  # 5 warm-up epochs
    assert recipe.label_smoothing == paper["smoothing"]
    assert recipe.drop_path == paper["drop_path"] and recipe.dropout == 0.0
    assert recipe.repeated_augmentation == (TIMM_REPEATS if paper["repeated"] else 1)
    assert (recipe.mixup, recipe.cutmix) == (paper["mixup"], 1.0)
    # LAMB's own decay (inside its update), and timm's gradient clipping.
    assert recipe.decay_mode == "coupled" and recipe.global_clipnorm == TIMM_LAMB_CLIPNORM
    # The schedule of an ImageNet run (1,281,167 images: 625 steps of 2048 per epoch): a linear
    # warm-up over 5 epochs to the peak, then cosine decay to 0 at the end.
    total = 625 * recipe.epochs
    schedule = recipe_schedule(recipe, 2048, total)
    assert schedule.decay == "cosine" and schedule.warmup_steps == 5 * 625
    at = [float(keras.ops.convert_to_numpy(schedule(step))) for step in (3124, 3125, total)]
    assert at == pytest.approx([paper["lr"], paper["lr"], 0.0], abs=1e-9)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_augmentation_preset_is_the_papers(name):
    paper, recipe = PAPER[name], get_recipe(name)
    layer, mixing = kr.data.get_augmentation(recipe.augment, 32)
    crop, flip, rand_augment = layer.layers
    assert isinstance(crop, RandomResizedCrop) and isinstance(flip, keras.layers.RandomFlip)
    assert isinstance(rand_augment, RandAugment) and rand_augment.num_ops == 2
    # timm's rand-m{7,6}-mstd0.5-inc1: each op with probability 0.5, magnitude +- 0.5.
    assert (rand_augment.magnitude, rand_augment.magnitude_std) == (paper["randaugment"], 0.5)
    assert (rand_augment.prob, rand_augment.increasing) == (0.5, True)
    assert mixing is MIXING[recipe.augment]
    assert (mixing.mixup_alpha, mixing.cutmix_alpha) == (paper["mixup"], 1.0)
    assert mixing.cutmix_prob == 0.5 and mixing.label_smoothing == paper["smoothing"]


def test_models_built_by_name_get_stochastic_depth_and_logits():
    assert recipe_model_options("resnet50", "rsb_a1") == {
        "drop_path": 0.05,
        "classifier_activation": None,
    }
    assert recipe_model_options("resnet50d", "rsb_a3") == {"classifier_activation": None}
    assert recipe_model_options("vit_s16", "rsb_a2") == {
        "drop_path": 0.05,
        "classifier_activation": None,
    }


def numpy_timm_lamb(params, gradients, excluded, lr, l2, beta_1=0.9, beta_2=0.999):
    """timm's `Lamb.step` (timm/optim/lamb.py) in NumPy over several steps: the global gradient
    norm clipped at 1.0, Adam moments with bias correction, eps 1e-6 added after the square
    root; decayed parameters add `l2 * p` to the update and take the trust ratio; excluded
    ones take the Adam update as it is."""
    params = [p.astype("float64") for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for step, grads in enumerate(gradients, start=1):
        norm = np.sqrt(sum(np.sum(g.astype("float64") ** 2) for g in grads))
        clip = max(norm / 1.0, 1.0)
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            g = g / clip
            m[i] = beta_1 * m[i] + (1 - beta_1) * g
            v[i] = beta_2 * v[i] + (1 - beta_2) * g * g
            denom = np.sqrt(v[i]) / np.sqrt(1 - beta_2**step) + 1e-6
            update = m[i] / (1 - beta_1**step) / denom
            if not excluded[i]:
                update = update + l2 * p
                w_norm, u_norm = np.linalg.norm(p), np.linalg.norm(update)
                update = update * (w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0)
            params[i] = p - lr * update
    return params


def test_coupled_decay_lamb_matches_timms_lamb():
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(0, 1, (3, 4)), rng.normal(0, 0.1, (4,))
    # Gradients with a global norm above 1 in the first step: the clipping is exercised.
    gradients = [[rng.normal(0, s, (3, 4)), rng.normal(0, s, (4,))] for s in (2.0, 0.1, 0.3)]
    variables = [
        keras.Variable(kernel.astype("float32"), name="kernel"),
        keras.Variable(bias.astype("float32"), name="bias"),
    ]
    optimizer = CoupledDecayLamb(
        learning_rate=0.05, l2=0.02, exclude=("bias",), global_clipnorm=1.0
    )
    for grads in gradients:
        optimizer.apply(
            [keras.ops.convert_to_tensor(g.astype("float32")) for g in grads], variables
        )
    expected = numpy_timm_lamb([kernel, bias], gradients, [False, True], lr=0.05, l2=0.02)
    for variable, value in zip(variables, expected, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(variable), value, rtol=1e-5, atol=1e-6
        )
    restored = CoupledDecayLamb.from_config(optimizer.get_config())
    assert (restored.l2, restored.exclude, restored.epsilon) == (0.02, ("bias",), 1e-6)


def test_binary_cross_entropy_thresholds_mixed_targets_as_timm():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (4, 5))
    one_hot = np.eye(5)[[0, 1, 2, 3]]
    mixed = 0.85 * one_hot + 0.15 * one_hot[::-1]  # MixUp with lambda 0.85
    loss = MultiLabelBinaryCrossentropy(target_threshold=0.2)
    # The 0.15 share falls below the threshold: the targets are the one-hot labels again.
    targets = (mixed > 0.2).astype("float64")
    expected = np.mean(np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-abs(logits))))
    actual = float(keras.ops.convert_to_numpy(loss(mixed, logits)))
    assert actual == pytest.approx(expected, rel=1e-5)
    # Smoothing (of integer labels, in the loss) comes before the threshold, as in timm.
    smoothed = MultiLabelBinaryCrossentropy(label_smoothing=0.1)
    targets = one_hot * 0.9 + 0.1 / 5
    expected = np.mean(np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-abs(logits))))
    assert float(keras.ops.convert_to_numpy(smoothed(one_hot, logits))) == pytest.approx(
        expected, rel=1e-5
    )
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(restored, MultiLabelBinaryCrossentropy)
    assert restored.target_threshold == 0.2


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"target_threshold": 0.2}, ["target_threshold=0.2", "binary_cross_entropy"]),
        ({"loss": "focal"}, ["loss='focal'", "cross_entropy"]),
        ({"repeated_augmentation": 0}, ["repeated_augmentation=0", "positive int"]),
        (
            {"optimizer": "adamw", "decay_mode": "coupled", "weight_decay": 0.1},
            ["decay_mode='coupled'", "optimizer='adamw'", "LAMB"],
        ),
    ],
)
def test_bad_recipe_fields_raise_one_clear_value_error(fields, words):
    base = {"optimizer": "lamb", "learning_rate": 1e-3, "batch_size": 64, "epochs": 1}
    with pytest.raises(ValueError) as info:
        Recipe(**{**base, **fields})
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.fixture(scope="module")
def digits():
    (x, y), _ = kr.data.load_digits()
    return x[:64], y[:64]


def test_train_compiles_lamb_and_binary_cross_entropy_from_the_recipe(digits, tmp_path):
    recipe = get_recipe("rsb_a2", warmup=0.0)
    history = kr.train(
        "resnet20", digits, recipe=recipe, steps=2, batch_size=32, output_dir=tmp_path, verbose=0
    )
    model = history.model
    optimizer = model.optimizer
    assert isinstance(optimizer, CoupledDecayLamb)
    assert optimizer.l2 == 0.02 and optimizer.global_clipnorm == 1.0
    assert {"gamma", "beta", "bias"} <= set(optimizer.exclude)
    # lr 5e-3 at batch 2048, scaled to the batch of 32.
    rate = optimizer.learning_rate
    assert float(keras.ops.convert_to_numpy(rate)) < 5e-3 * 32 / 2048 * (1 + 1e-6)
    assert isinstance(model.loss, MultiLabelBinaryCrossentropy)
    assert model.loss.target_threshold == 0.2 and model.loss.from_logits
    # Built by name: logits out, stochastic depth up to 0.05 at the last block.
    assert model.get_layer("predictions").activation is keras.activations.linear
    rates = [layer.rate for layer in model.layers if isinstance(layer, DropPath)]
    assert max(rates) == pytest.approx(0.05) and len(rates) == 8
    assert np.isfinite(history.history["loss"]).all()
    fields = json.loads((tmp_path / "config.json").read_text())["recipe_fields"]
    assert fields["repeated_augmentation"] == 3 and fields["loss"] == "binary_cross_entropy"


def test_train_refuses_a_softmax_model_for_binary_cross_entropy(digits, tmp_path):
    model = kr.build_resnet(8, stem="cifar")  # resnet20's layer shapes: compiled already on JAX
    with pytest.raises(ValueError, match="classifier_activation=None"):
        kr.train(model, digits, recipe="rsb_a3", steps=1, batch_size=32, output_dir=tmp_path)
