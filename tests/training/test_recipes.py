"""Recipes build their optimizers; schedules hit the papers' values at the named steps."""

import keras
import numpy as np
import pytest

from keras_resvit.training.recipes import RECIPES, get_recipe
from keras_resvit.training.schedules import RecipeSchedule, recipe_schedule
from keras_resvit.training.train import NO_DECAY, build_optimizer
from tests.conftest import tiny_vit


def rates(schedule, steps):
    return [float(keras.ops.convert_to_numpy(schedule(s))) for s in steps]


def test_resnet_cifar_divides_by_ten_at_32k_and_48k_of_64k():
    schedule = recipe_schedule(RECIPES["resnet_cifar"], 128, 64_000)
    np.testing.assert_allclose(
        rates(schedule, [0, 31_999, 32_000, 47_999, 48_000, 63_999]),
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001],
        rtol=1e-6,
    )


def test_learning_rate_scales_with_global_batch():
    schedule = recipe_schedule(RECIPES["deit"], 1024, 10_000)
    # DeiT: 5e-4 * batch / 512, reached at the end of the warm-up.
    warmup = round(5 / 300 * 10_000)
    assert rates(schedule, [warmup])[0] == pytest.approx(1e-3, rel=1e-6)
    assert rates(schedule, [0])[0] == pytest.approx(1e-3 / warmup, rel=1e-5)
    assert rates(schedule, [9_999])[0] < 1e-8


def test_vit_pretrain_warms_up_10k_steps_then_decays_linearly():
    schedule = recipe_schedule(RECIPES["vit_pretrain"], 4096, 110_000)
    peak = RECIPES["vit_pretrain"].learning_rate
    np.testing.assert_allclose(
        rates(schedule, [4_999, 9_999, 10_000, 60_000, 110_000]),
        [peak / 2, peak, peak, peak / 2, 0.0],
        rtol=1e-5,
        atol=1e-12,
    )


def test_constant_warmup_of_resnet110():
    recipe = get_recipe("resnet_cifar", warmup=400, warmup_learning_rate=0.01)
    schedule = recipe_schedule(recipe, 128, 64_000)
    np.testing.assert_allclose(rates(schedule, [0, 399, 400]), [0.01, 0.01, 0.1], rtol=1e-6)


def test_schedule_serializes():
    schedule = RecipeSchedule(0.1, 1000, 100, "cosine")
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert rates(clone, [50, 500]) == rates(schedule, [50, 500])


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_builds_its_optimizer(name):
    recipe = RECIPES[name]
    optimizer = build_optimizer(recipe, recipe.batch_size, 1000)
    kind = keras.optimizers.SGD if recipe.optimizer == "sgd" else keras.optimizers.AdamW
    assert isinstance(optimizer, kind)
    assert optimizer.global_clipnorm == recipe.global_clipnorm
    if recipe.optimizer == "sgd":
        assert optimizer.momentum == recipe.momentum


def test_weight_decay_skips_norms_biases_tokens_and_position_embeddings():
    model = tiny_vit(num_layers=1)
    optimizer = build_optimizer(RECIPES["deit"], 512, 100)
    optimizer.build(model.trainable_variables)
    decayed = {v.path for v in model.trainable_variables if optimizer._use_weight_decay(v)}
    assert decayed and all(
        v.name == "kernel" for v in model.trainable_variables if v.path in decayed
    )
    skipped = {v.name for v in model.trainable_variables if v.path not in decayed}
    assert {"gamma", "beta", "bias", "token", "embeddings"} <= skipped
    assert set(NO_DECAY) == {"gamma", "beta", "bias", "token", "embeddings"}


def test_ema_optimizer():
    optimizer = build_optimizer(RECIPES["resnet_cifar"], 128, 100, ema=0.999)
    assert optimizer.use_ema and optimizer.ema_momentum == 0.999


def test_bad_recipe_names_and_fields():
    with pytest.raises(ValueError, match="recipe='resnet_cifer'.*Did you mean 'resnet_cifar'"):
        get_recipe("resnet_cifer")
    with pytest.raises(ValueError, match=r"\['lr'\] are not Recipe fields"):
        get_recipe("deit", lr=0.1)
