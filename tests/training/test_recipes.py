"""Recipes build their optimizers; schedules hit the papers' values at the named steps."""

import keras
import numpy as np
import pytest

from keras_resvit.data.augmentation import MIXING
from keras_resvit.training.optimizers import CoupledDecayLamb, CoupledDecaySGD, recipe_optimizer
from keras_resvit.training.recipes import NO_DECAY, RECIPES, get_recipe, recipe_model_options
from keras_resvit.training.schedules import RecipeSchedule, recipe_schedule, recipe_steps
from keras_resvit.training.train import build_optimizer
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


def test_bit_hyperrule_warms_up_500_steps_then_divides_at_30_60_90_percent():
    recipe = RECIPES["bit_finetune"]
    assert (recipe.optimizer, recipe.momentum, recipe.weight_decay) == ("sgd", 0.9, 0.0)
    assert (recipe.steps, recipe.batch_size, recipe.mixup) == (10_000, 512, 0.1)
    schedule = recipe_schedule(recipe, 512, 10_000)
    np.testing.assert_allclose(
        rates(schedule, [249, 499, 2_999, 3_000, 5_999, 6_000, 9_000, 9_999]),
        [0.0015, 0.003, 0.003, 3e-4, 3e-4, 3e-5, 3e-6, 3e-6],
        rtol=1e-4,
    )


def test_constant_warmup_of_resnet110():
    recipe = RECIPES["resnet_cifar_warmup"]
    schedule = recipe_schedule(recipe, 128, recipe_steps(recipe, 128))
    np.testing.assert_allclose(
        rates(schedule, [0, 399, 400, 31_999, 32_000, 48_000]),
        [0.01, 0.01, 0.1, 0.1, 0.01, 0.001],
        rtol=1e-6,
    )
    # At twice the batch: half the steps, twice the rates (the same images at each rate).
    schedule = recipe_schedule(recipe, 256, recipe_steps(recipe, 256))
    np.testing.assert_allclose(
        rates(schedule, [0, 199, 200, 15_999, 16_000, 24_000]),
        [0.02, 0.02, 0.2, 0.2, 0.02, 0.002],
        rtol=1e-6,
    )


def test_cifar_recipes_count_the_papers_64k_iterations():
    for name in ("resnet_cifar", "resnet_cifar_warmup"):
        recipe = RECIPES[name]
        assert (recipe.steps, recipe.batch_size, recipe.decay_at) == (64_000, 128, (0.5, 0.75))
        assert (recipe.optimizer, recipe.learning_rate, recipe.momentum) == ("sgd", 0.1, 0.9)
        assert (recipe.weight_decay, recipe.decay_mode, recipe.no_decay) == (1e-4, "coupled", ())
        assert recipe.augment == "resnet_cifar" and not (recipe.mixup or recipe.label_smoothing)
        assert recipe_steps(recipe, 128) == 64_000
        assert recipe_steps(recipe, 512) == 16_000
    assert recipe_steps(RECIPES["deit"], 512) is None  # it counts epochs


def test_schedule_serializes():
    schedule = RecipeSchedule(0.1, 1000, 100, "cosine")
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert rates(clone, [50, 500]) == rates(schedule, [50, 500])


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_builds_its_optimizer(name):
    recipe = RECIPES[name]
    optimizer = build_optimizer(recipe, recipe.batch_size, 1000)
    kinds = {"sgd": keras.optimizers.SGD, "lamb": keras.optimizers.Lamb}
    assert isinstance(optimizer, kinds.get(recipe.optimizer, keras.optimizers.AdamW))
    coupled = recipe.decay_mode == "coupled" and recipe.weight_decay > 0
    assert isinstance(optimizer, (CoupledDecaySGD, CoupledDecayLamb)) == coupled
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


def sgd_step_by_hand(w, g, velocity, lr, momentum, wd, mode):
    """One step of SGD with momentum as the papers (coupled) and AdamW (decoupled) define it."""
    if mode == "coupled":
        g = g + wd * w
    velocity = momentum * velocity - lr * g
    w = w + velocity
    if mode == "decoupled":
        w = w - lr * wd * (w - velocity)  # Keras decays the weight before the update
    return w, velocity


@pytest.mark.parametrize("mode", ["coupled", "decoupled"])
def test_weight_decay_modes_match_a_hand_written_sgd_step(mode):
    recipe = get_recipe("resnet_cifar", decay_mode=mode, weight_decay=0.05, steps=None)
    optimizer = build_optimizer(recipe, 128, 100)
    # A batch-norm scale: the papers decay it too, so both modes must touch it here.
    w = keras.Variable(np.array([1.0, -2.0, 0.5], "float32"), name="gamma")
    optimizer.build([w])
    rng = np.random.default_rng(0)
    expected, velocity = w.numpy().astype("float64"), np.zeros(3)
    for _ in range(3):
        g = rng.normal(size=3)
        optimizer.apply([keras.ops.convert_to_tensor(g.astype("float32"))], [w])
        expected, velocity = sgd_step_by_hand(expected, g, velocity, 0.1, 0.9, 0.05, mode)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-5)


def test_coupled_decay_is_ten_times_the_decoupled_pull_at_momentum_0_9():
    """With a zero loss gradient, the coupled decay's velocity builds up to 1 / (1 - 0.9)."""
    pulls = {}
    for mode in ("coupled", "decoupled"):
        recipe = get_recipe("resnet_cifar", decay_mode=mode, steps=None, weight_decay=1e-3)
        optimizer = build_optimizer(recipe, 128, 1000)
        w = keras.Variable(np.ones(1, "float32"))
        optimizer.build([w])
        zero = keras.ops.zeros(1)
        for _ in range(100):
            before = float(w.numpy()[0])
            optimizer.apply([zero], [w])
        pulls[mode] = (before - float(w.numpy()[0])) / before
    assert pulls["coupled"] / pulls["decoupled"] == pytest.approx(10.0, rel=0.01)


def test_resnet_recipes_decay_every_variable_vit_recipes_spare_norms():
    model = tiny_vit(num_layers=1)
    variables = model.trainable_variables
    for name in ("resnet_cifar", "resnet_imagenet"):
        optimizer = build_optimizer(RECIPES[name], 128, 100)
        optimizer.build(variables)
        assert all(optimizer._use_weight_decay(v) for v in variables), name
        assert optimizer.l2 == 1e-4 and not optimizer.weight_decay
    for name in ("vit_pretrain", "deit"):
        optimizer = build_optimizer(RECIPES[name], 512, 100)
        optimizer.build(variables)
        assert not any(optimizer._use_weight_decay(v) for v in variables if v.name == "gamma")


def test_coupled_decay_optimizer_serializes_and_refuses_both_modes():
    optimizer = CoupledDecaySGD(learning_rate=0.1, momentum=0.9, l2=1e-4, exclude=("bias",))
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(clone, CoupledDecaySGD)
    assert (clone.l2, clone.exclude, clone.momentum) == (1e-4, ("bias",), 0.9)
    with pytest.raises(ValueError, match="weight_decay=0.1: CoupledDecaySGD decays through"):
        CoupledDecaySGD(l2=1e-4, weight_decay=0.1)
    with pytest.raises(ValueError, match="l2=-1 must be a number >= 0"):
        CoupledDecaySGD(l2=-1)


def test_recipe_fields_are_checked():
    with pytest.raises(ValueError, match="decay_mode='coupled' with optimizer='adamw'"):
        get_recipe("deit", decay_mode="coupled")
    with pytest.raises(ValueError, match="decay_mode='l1' is not valid"):
        get_recipe("deit", decay_mode="l1")
    with pytest.raises(ValueError, match="steps=0 must be a positive int"):
        get_recipe("resnet_cifar", steps=0)
    with pytest.raises(ValueError, match="patience=0 must be a positive int"):
        get_recipe("resnet_imagenet", patience=0)
    with pytest.raises(ValueError, match=r"dropout=1.5 must be a number in \[0, 1\)"):
        get_recipe("vit_pretrain", dropout=1.5)
    with pytest.raises(ValueError, match="no_decay='bias' must be a tuple of names"):
        get_recipe("deit", no_decay="bias")
    # Lists are kept as tuples: a recipe stays hashable.
    listed = get_recipe("resnet_cifar", no_decay=["bias", "norm"], decay_at=[0.3, 0.6])
    assert listed.no_decay == ("bias", "norm") and listed.decay_at == (0.3, 0.6)
    assert hash(listed) == hash(
        get_recipe("resnet_cifar", no_decay=("bias", "norm"), decay_at=(0.3, 0.6))
    )


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("learning_rate", -0.1, "must be a number > 0"),  # would train by gradient ascent
        ("learning_rate", "0.1", "must be a number > 0"),
        ("warmup_learning_rate", -1.0, "must be a number > 0"),
        ("batch_size", 0, "must be a positive int"),
        ("batch_size", 12.5, "must be a positive int"),
        ("epochs", 0, "must be a positive int"),
        ("image_size", 0, "must be a positive int"),
        ("momentum", -1.0, r"in \[0, 1\)"),
        ("beta_2", 1.5, r"in \[0, 1\)"),
        ("label_smoothing", 5.0, r"in \[0, 1\)"),
        ("drop_path", 2.0, r"in \[0, 1\)"),
        ("warmup", -5, ">= 0"),
        ("weight_decay", float("nan"), ">= 0"),
        ("mixup", -1.0, ">= 0"),
        ("cutmix", float("inf"), ">= 0"),
        ("global_clipnorm", -1.0, "> 0"),
        ("target_threshold", 5.0, r"in \(0, 1\)"),
        ("decay_at", 0.5, "must be a tuple of increasing fractions"),
        ("decay_at", (1.5,), "must be a tuple of increasing fractions"),
        ("decay_at", (0.75, 0.5), "must be a tuple of increasing fractions"),
        ("decay_at", (0.5, 0.5), "must be a tuple of increasing fractions"),
        ("no_decay", None, "must be a tuple of names"),
        ("no_decay", ("bias", 3), "must be a tuple of names"),
        ("augment", "resnet-cifar", "'resnet_cifar'"),
        ("augment", ["resnet_cifar"], "expected one of"),
        ("mixup", 0.8, "are not those of augment='resnet_cifar'"),
        ("warmup_learning_rate", 0.01, "needs a warm-up"),
        ("schedule", "cosine", "applies to schedule='step' only"),
        ("label_smoothing", 0.3, r"is not that of augment='deit' \(0.1\)"),
    ],
)
def test_a_recipe_number_out_of_its_range_is_named(field, value, words):
    recipe = {"target_threshold": "rsb_a1", "label_smoothing": "deit"}.get(field, "resnet_cifar")
    named = "decay_at" if field == "schedule" else field  # the field it makes ignored
    with pytest.raises(ValueError, match=f"Recipe: {named}=.*{words}"):
        get_recipe(recipe, **{field: value})


def test_a_recipes_mixing_fields_are_its_augmentation_presets():
    for name, recipe in RECIPES.items():
        mixing = MIXING.get(recipe.augment)
        expected = (mixing.mixup_alpha, mixing.cutmix_alpha) if mixing else (0.0, 0.0)
        assert (recipe.mixup, recipe.cutmix) == expected, name
    assert RECIPES["bit_finetune"].augment == "bit" and MIXING["bit"].mixup_alpha == 0.1


def test_vit_recipes_are_the_papers():
    """Dosovitskiy et al. (2021), Table 3 and Appendix B.1.1."""
    rows = {
        "vit_pretrain": (3e-3, 300, "cosine", 0.3, 0.1),
        "vit_pretrain_in21k": (1e-3, 90, "linear", 0.03, 0.1),
        "vit_pretrain_jft": (8e-4, 7, "linear", 0.1, 0.0),
    }
    for name, row in rows.items():
        recipe = RECIPES[name]
        assert (recipe.learning_rate, recipe.epochs, recipe.schedule) == row[:3]
        assert (recipe.weight_decay, recipe.dropout) == row[3:]
        assert (recipe.optimizer, recipe.beta_1, recipe.beta_2) == ("adamw", 0.9, 0.999)
        assert (recipe.batch_size, recipe.warmup, recipe.global_clipnorm) == (4096, 10_000, 1.0)
        assert recipe.pre_logits and recipe.decay_mode == "decoupled"
    finetune = RECIPES["vit_finetune"]
    assert (finetune.optimizer, finetune.momentum, finetune.batch_size) == ("sgd", 0.9, 512)
    assert (finetune.schedule, finetune.global_clipnorm, finetune.weight_decay) == (
        "cosine",
        1.0,
        0.0,
    )
    # Random crop and flip only; RandAugment and MixUp are the named strong variant.
    assert finetune.augment == "inception_crop" and not finetune.mixup
    assert (RECIPES["vit_finetune_strong"].augment, RECIPES["vit_finetune_strong"].mixup) == (
        "vit",
        0.5,
    )


def test_imagenet_recipes_are_the_papers():
    """He et al. (2016), Section 3.4; Krizhevsky et al. (2012), Section 5."""
    resnet = RECIPES["resnet_imagenet"]
    assert (resnet.optimizer, resnet.momentum, resnet.batch_size) == ("sgd", 0.9, 256)
    assert (resnet.learning_rate, resnet.schedule, resnet.steps) == (0.1, "plateau", 600_000)
    assert (resnet.weight_decay, resnet.decay_mode, resnet.no_decay) == (1e-4, "coupled", ())
    assert resnet.augment == "resnet_imagenet"
    fixed = RECIPES["resnet_imagenet_step"]
    assert (fixed.schedule, fixed.decay_at, fixed.epochs) == ("step", (1 / 3, 2 / 3), 90)
    alexnet = RECIPES["alexnet"]
    assert (alexnet.learning_rate, alexnet.batch_size, alexnet.momentum) == (0.01, 128, 0.9)
    assert (alexnet.weight_decay, alexnet.decay_mode, alexnet.schedule) == (
        5e-4,
        "coupled",
        "plateau",
    )
    assert alexnet.augment == "alexnet"
    # A plateau schedule is a rate the callback lowers, not a function of the step.
    optimizer = build_optimizer(resnet, 512, 1000)
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="a 'plateau' schedule is no function of the step"):
        recipe_schedule(resnet, 256, 1000)
    with pytest.raises(ValueError, match="decay='plateau' is not valid"):
        RecipeSchedule(0.1, 1000, decay="plateau")
    with pytest.raises(ValueError, match="schedule='plateau' has no warm-up"):
        get_recipe("resnet_imagenet", warmup=100)


def test_recipes_set_their_vit_options_on_models_built_by_name():
    # ViT paper, Section 3.1 / Table 3: pre-training with a tanh pre-logits layer of the
    # model's width and dropout 0.1 (ImageNet-21k); DeiT: stochastic depth 0.1; fine-tuning
    # and ResNet recipes set nothing.
    assert recipe_model_options("vit_b16", "vit_pretrain_in21k") == {
        "dropout": 0.1,
        "representation_size": 768,
    }
    assert recipe_model_options("vit_s16", "deit") == {"drop_path": 0.1}
    assert recipe_model_options("r50_vit_b16", "deit") == {"drop_path": 0.1}
    assert recipe_model_options("vit_b16", "vit_finetune") == {}
    # ResNets take a recipe's stochastic depth too (timm's --drop-path applies to both).
    assert recipe_model_options("resnet50", "deit") == {"drop_path": 0.1}
    assert recipe_model_options("resnet50", "resnet_imagenet") == {}
    with pytest.raises(ValueError, match="not a registered model"):
        recipe_model_options("vit_b17", "deit")


@pytest.mark.parametrize(
    "recipe, field, value, owner",
    [
        ("deit", "momentum", 0.5, "optimizer='adamw'"),
        ("rsb_a1", "momentum", 0.99, "optimizer='lamb'"),
        ("resnet_cifar", "beta_1", 0.8, "optimizer='sgd'"),
        ("vit_finetune", "beta_2", 0.95, "optimizer='sgd'"),
        ("resnet_cifar", "patience", 2, "schedule='step'"),
        ("deit", "patience", 10, "schedule='cosine'"),
    ],
)
def test_a_field_its_optimizer_or_schedule_does_not_read_is_refused(recipe, field, value, owner):
    with pytest.raises(ValueError, match=f"Recipe: {field}={value!r} has no effect with {owner}"):
        get_recipe(recipe, **{field: value})


def test_fields_read_by_their_optimizer_and_schedule_reach_it():
    sgd = recipe_optimizer(get_recipe("resnet_cifar", momentum=0.5), 0.1)
    assert float(sgd.momentum) == 0.5
    adam = recipe_optimizer(get_recipe("deit", beta_1=0.8, beta_2=0.95), 1e-3)
    assert (float(adam.beta_1), float(adam.beta_2)) == (0.8, 0.95)
    # Switching the optimizer clears nothing: a changed momentum then applies to nothing.
    assert get_recipe("vit_finetune", optimizer="adamw").momentum == 0.9
    with pytest.raises(ValueError, match="momentum=0.5 has no effect"):
        get_recipe(get_recipe("vit_finetune", momentum=0.5), optimizer="adamw")


def test_an_epochs_override_of_a_recipe_that_counts_steps_is_refused():
    # resnet_cifar runs 64k iterations whatever `epochs` says.
    with pytest.raises(ValueError, match=r"epochs=1 has no effect: .*steps=64000"):
        get_recipe("resnet_cifar", epochs=1)
    assert get_recipe("resnet_cifar", epochs=1, steps=None).epochs == 1
    assert get_recipe("deit", epochs=3).epochs == 3


def test_a_run_of_one_step_trains_at_the_peak_rate():
    # round(0.5 * 1) = 0 put the first /10 boundary before the only step.
    schedule = recipe_schedule(RECIPES["resnet_cifar"], 128, 1)
    assert float(schedule(0)) == pytest.approx(0.1)
    assert recipe_schedule(RECIPES["resnet_cifar"], 128, 3).decay_at == (2, 2)
