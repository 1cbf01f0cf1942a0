"""Masked patch prediction: the ViT paper's self-supervised pre-training (Appendix B.1.2).

The pre-training model shares every layer of a ViT up to its final LayerNorm: patch embedding
(and a hybrid's ResNet), class token, position embeddings and encoder blocks. Between the patch
embedding and the class token, `PatchCorruption` corrupts half of the patch embeddings; a dense
head on the encoder's patch tokens predicts each corrupted patch's 3-bit mean colour, and
`MaskedPatchLoss` scores only those. Training it trains the ViT in place, so the returned
model is a `build_vit` model with pre-trained encoder weights, ready for
`keras_resvit.replace_head` and fine-tuning.
"""

import keras
import numpy as np

from keras_resvit.base.files import check_output_path, write_json
from keras_resvit.base.lazy import tf
from keras_resvit.base.model_files import save_model
from keras_resvit.base.output_folders import output_folder
from keras_resvit.base.validation import (
    check_bool,
    check_int,
    check_number,
    check_seed,
    check_verbose,
)
from keras_resvit.data.checks import (
    check_batch_fits,
    check_batches,
    check_pixels,
    data_errors,
    image_shape_fits,
)
from keras_resvit.data.datasets import load_dataset, source_named
from keras_resvit.data.loader_choice import ALL_EXAMPLES
from keras_resvit.factory import create_model
from keras_resvit.layers.masked_patch_layers import (
    MaskedPatchLoss,
    PatchColourClasses,
    PatchCorruption,
)
from keras_resvit.layers.vit_layers import PositionEmbedding
from keras_resvit.models.common import is_vit
from keras_resvit.models.registry import get_spec
from keras_resvit.models.vit import encoder_tokens
from keras_resvit.training.callbacks import NanGuard
from keras_resvit.training.history_csv import HistoryCSV
from keras_resvit.training.run_folder import CONFIG_FILE, KIND, check_run_kind
from keras_resvit.training.run_outputs import TrainingDivergedError

COLOUR_BITS = 3  # per channel: 2^(3 * 3) = 512 colour classes
# Appendix B.1.2: Adam, base learning rate 2e-4, 10k warm-up steps, cosine decay.
LEARNING_RATE = 2e-4
WARMUP_STEPS = 10_000
BATCH_SIZE = 64  # for a kr.data source
OUTPUTS = (CONFIG_FILE, "history.csv", "pretrained.keras")  # what `output_dir` receives
# The kind of run its config.json names: a folder holds one kind of run (`check_run_kind`).
PRETRAINING = "pretrain_masked_patches"


def _check_vit(model_or_name, argument="model_or_name"):
    if isinstance(model_or_name, str):
        family = get_spec(model_or_name).family
        if family not in ("vit", "hybrid_vit"):
            raise ValueError(
                f"model_or_name={model_or_name!r} is a {family} model; masked patch prediction "
                "needs a ViT, e.g. 'vit_s16' or 'r50_vit_b16'."
            )
        return create_model(model_or_name)
    if not isinstance(model_or_name, keras.Model) or not is_vit(model_or_name):
        raise ValueError(
            f"{argument}={getattr(model_or_name, 'name', model_or_name)!r} is not a ViT; "
            "pass a model built by build_vit / build_hybrid_vit or a ViT registry name."
        )
    if None in model_or_name.input_shape[1:3]:
        raise ValueError(
            f"{argument}={model_or_name.name!r} takes images of any size "
            f"{model_or_name.input_shape}; masked patch prediction needs a fixed size: "
            "kr.resize_vit(model, image_size) gives one."
        )
    return model_or_name


def masked_patch_model(vit: keras.Model, seed: int | None = None) -> keras.Model:
    """The masked-patch pre-training model around a ViT, sharing its layers (and weights).

    Args:
        vit: a model built by `build_vit` or `build_hybrid_vit` (any pooling and head).
        seed: seed of the corruption.

    Returns:
        A `keras.Model` from raw images to colour logits `(batch, patches, 512)` that adds its
        masked-patch loss itself: compile it without a loss and fit it on images alone.

    Raises:
        ValueError: `vit` is not a ViT.

    Example:
    >>> from keras_resvit.training.masked_pretraining import masked_patch_model
    >>> import keras_resvit as kr
    >>> vit = kr.build_vit("Ti/16", image_size=32, num_classes=10)
    >>> masked_patch_model(vit).output_shape
    (None, 4, 512)
    """
    vit = _check_vit(vit, "vit")
    if seed is not None:
        check_seed(seed)
    position = next(layer for layer in vit.layers if isinstance(layer, PositionEmbedding))
    patch_size = vit.input_shape[1] // position.grid_size[0]
    flat = vit.get_layer("patch_embedding_flatten").output
    embed = keras.Model(vit.inputs, flat, name="patch_embedder")
    encode = keras.Model(flat, encoder_tokens(vit), name="encoder")
    images = keras.Input(shape=vit.input_shape[1:], name="images")
    tokens, picked = PatchCorruption(seed=seed, name="patch_corruption")(embed(images))
    tokens = encode(tokens)
    if position.num_prefix_tokens:
        tokens = keras.layers.Cropping1D((position.num_prefix_tokens, 0), name="patch_tokens")(
            tokens
        )
    logits = keras.layers.Dense(2 ** (3 * COLOUR_BITS), name="colour_logits")(tokens)
    targets = PatchColourClasses(patch_size, COLOUR_BITS, name="colour_classes")(images)
    logits = MaskedPatchLoss(name="masked_patch_loss")([logits, targets, picked])
    return keras.Model(images, logits, name=f"{vit.name}_masked_patches")


class _ImageBatches(keras.utils.PyDataset):
    """The images of a `keras.utils.PyDataset`'s (images, labels) batches, each checked: of
    `shape` (height, width, channels), with finite pixels."""

    def __init__(self, batches, shape):
        # The loader's own parallel reading, kept.
        super().__init__(
            workers=batches.workers,
            use_multiprocessing=batches.use_multiprocessing,
            max_queue_size=batches.max_queue_size,
        )
        self.warned = set()  # one range warning for the run, not one per batch
        self.batches = batches
        self.shape = shape

    def __len__(self):
        return len(self.batches)

    def on_epoch_end(self):
        # The loader's next epoch: its new order and augmentation draws.
        self.batches.on_epoch_end()

    def __getitem__(self, index):
        batch = self.batches[index]
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        if isinstance(images, dict):
            _not_images(f"data batch {index}", f"a dict (keys {sorted(images)})")
        images = np.asarray(images)
        if images.ndim != 4:
            _not_images(f"data batch {index}", f"images of shape {images.shape}")
        _check_image_shape(f"data batch {index}", images.shape[1:], self.shape)
        check_pixels(f"data batch {index} images", images, warned=self.warned)
        return images


def _not_images(argument, what):
    raise ValueError(
        f"{argument} holds {what}; expected batches of images (batch, height, width, "
        "channels), alone or with labels."
    )


def _check_image_shape(argument, shape, expected):
    if not image_shape_fits(tuple(expected), tuple(shape)):  # sizes a dataset leaves unknown pass
        raise ValueError(
            f"{argument} holds images of shape {tuple(shape)}; the ViT takes "
            f"{tuple(expected)} (resize the images, or kr.resize_vit the model)."
        )


def _checked_images(data):
    """A dataset of image batches whose every pixel is checked to be finite."""
    labelled = data.map(lambda images: (images, tf.zeros(tf.shape(images)[:1], "int32")))
    return check_batches(labelled, 1, "data").map(lambda images, labels: images)


def _images(data, vit, batch_size, seed, asked=None):
    """A finite dataset of image batches (a `tf.data.Dataset` or a `keras.utils.PyDataset`:
    what `load_dataset` gives without TensorFlow) and its number of batches. `asked`: the
    batch size a source was loaded with, which its first batch must hold."""
    shape = tuple(vit.input_shape[1:])
    source = not isinstance(data, keras.utils.PyDataset) and not hasattr(data, "element_spec")
    if batch_size is not None and not source:
        raise ValueError(
            f"batch_size={batch_size!r} applies to a kr.data source only; a dataset of "
            "batches sets its own batch."
        )
    if isinstance(data, keras.utils.PyDataset):
        if not len(data):
            raise ValueError("data has 0 batches; it must be finite and non-empty.")
        if asked:
            check_batch_fits(asked, len(data[0][0]), "images of data")
        return _ImageBatches(data, shape), len(data)
    if source:  # a kr.data source
        with source_named("data"):
            data = load_dataset(
                data,
                "train",
                image_size=shape[0],
                batch_size=batch_size or BATCH_SIZE,
                seed=seed,
                loader_options=ALL_EXAMPLES,  # not a distributed run: each process reads all
            )
        return _images(data, vit, None, seed, asked=batch_size)
    images = data.element_spec[0] if isinstance(data.element_spec, tuple) else data.element_spec
    if not isinstance(images, tf.TensorSpec):
        _not_images("data", f"{type(images).__name__} elements ({images})")
    if len(images.shape) != 4:
        _not_images("data", f"{images.shape} tensors")
    if isinstance(data.element_spec, tuple):
        data = data.map(lambda images, *labels: images)
    _check_image_shape("data", images.shape[1:], shape)
    steps = int(data.cardinality())
    if steps == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "data repeats forever (a .repeat() without a count); pass one pass over the "
            "images: `epochs` sets how many passes pre-training makes."
        )
    if steps == tf.data.UNKNOWN_CARDINALITY:
        steps = sum(1 for _ in data)
    if steps <= 0:
        raise ValueError(f"data has {steps} batches; it must be finite and non-empty.")
    for images in data.take(1):  # a scale other than raw 0-255 pixels warns
        check_pixels("data images", images.numpy())
        if asked:
            check_batch_fits(asked, images.shape[0], "images of data")
    return _checked_images(data), steps


def pretrain_masked_patches(
    model_or_name,
    data="digits",
    *,
    epochs: int = 1,
    batch_size: int | None = None,
    learning_rate: float = LEARNING_RATE,
    warmup_steps: int | None = None,
    seed: int = 0,
    output_dir=None,
    overwrite: bool = False,
    verbose="auto",
) -> keras.Model:
    """Pre-trains a ViT by masked patch prediction (ViT paper, Appendix B.1.2) and returns it.

    Half of each image's patch embeddings are corrupted (80% learned [mask] embedding, 10%
    another patch's embedding, 10% unchanged) and the encoder learns to predict the 3-bit mean
    colour (512 classes) of every corrupted patch, with Adam, linear warm-up and cosine decay.
    The ViT's own layers are trained, so the returned model has the pre-trained encoder and
    its untouched classifier; `kr.replace_head(model, num_classes)` gives the fine-tuning model.

    Args:
        model_or_name: a ViT (`build_vit`, `build_hybrid_vit`), trained in place, or a ViT
            registry name.
        data: a batched `tf.data.Dataset` or `keras.utils.PyDataset` (`kr.data.ImageLoader`)
            of images or (images, labels) (labels are ignored), or a `kr.data` source read in
            its "train" split at the model's resolution (with or without TensorFlow).
        epochs: passes over `data`.
        batch_size: batch size when `data` is a source (default 64); a dataset of batches
            sets its own.
        learning_rate: peak learning rate (the paper's 2e-4 at batch 4096).
        warmup_steps: linear warm-up; default the paper's 10k steps, at most a tenth of the run.
        seed: seed of the corruption and of the data order.
        output_dir: optional folder for `pretrained.keras` (the ViT), `history.csv` (the
            masked-patch loss per epoch) and `config.json` (the arguments, then the result).
            A new folder, or one of an earlier pre-training: an unfinished one is replaced, a
            finished one only with `overwrite=True`; never the folder of a `train` run.
        overwrite: replace a finished pre-training in `output_dir` (its `pretrained.keras`
            among the rest) rather than refuse to.
        verbose: passed to `model.fit`: "auto", 0 (silent), 1 (progress bar) or 2 (one line
            per epoch).

    Returns:
        The ViT (`model_or_name` itself when a model is given) with pre-trained weights.

    Raises:
        ValueError: not a ViT, a bad argument, empty data, images of another size than
            the ViT's or with NaN/inf pixels; an `output_dir` that is not writable, in use by
            another run, holding a finished pre-training (without `overwrite`), a `train` run
            or files of those names that keras_resvit did not write.
        TrainingDivergedError: the loss became NaN/inf (`pretrained.keras` is not written).

    Example:
    >>> import keras_resvit as kr
    >>> vit = kr.build_vit("Ti/16", image_size=32, num_classes=10)
    >>> (x, y), _ = kr.data.load_digits()
    >>> data = kr.data.load_dataset((x[:128], y[:128]), batch_size=64)  # or a source: "digits"
    >>> vit = kr.pretrain_masked_patches(vit, data, epochs=1, verbose=0)
    >>> model = kr.replace_head(vit, 10)  # fine-tune this one
    >>> model.output_shape
    (None, 10)
    """
    check_int("epochs", epochs)
    check_int("batch_size", batch_size, none_ok=True)
    check_bool("overwrite", overwrite)
    check_seed(seed)
    check_verbose(verbose)
    if warmup_steps is not None:
        check_int("warmup_steps", warmup_steps, minimum=0)
    check_number("learning_rate", learning_rate, 0)
    if output_dir is not None:
        output_dir = check_output_path("output_dir", output_dir, folder=True)
    vit = _check_vit(model_or_name)
    images, steps = _images(data, vit, batch_size, seed)
    total = epochs * steps
    warmup = min(WARMUP_STEPS, total // 10) if warmup_steps is None else min(warmup_steps, total)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else learning_rate,
        decay_steps=max(total - warmup, 1),
        warmup_target=learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    model = masked_patch_model(vit, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(schedule))

    def fit(callbacks):
        guard = NanGuard()
        with data_errors():
            history = model.fit(images, epochs=epochs, callbacks=[guard, *callbacks],
                                shuffle=False, verbose=verbose)  # fmt: skip
        if guard.bad_step is not None:
            raise TrainingDivergedError(
                f"the masked-patch loss became NaN/inf at step {guard.bad_step}, and the "
                f"ViT's weights with it. Lower learning_rate (now {learning_rate:g}) and "
                "start again from the model as it was before."
            )
        return history

    if output_dir is None:
        fit([])
        return vit
    # Locked, and refusing to overwrite files of these names that the package did not write,
    # and the files of a train run.
    with output_folder("output_dir", output_dir, OUTPUTS) as folder:
        check_run_kind("output_dir", folder.path, PRETRAINING, "pass another output_dir.")
        if not overwrite and (folder.path / "pretrained.keras").is_file():
            raise ValueError(
                f"output_dir={str(folder.path)!r} holds a finished pre-training "
                "(pretrained.keras); pass overwrite=True to replace it, or a new output_dir."
            )
        folder.start_writing()
        for name in OUTPUTS:  # an earlier pre-training's (`output_folder` checked they are ours)
            if (folder.path / name).is_file():
                (folder.path / name).unlink()
        record = {
            KIND: PRETRAINING,
            "model": vit.name,
            "input_shape": list(vit.input_shape[1:]),
            "epochs": epochs,
            "steps_per_epoch": steps,
            "learning_rate": learning_rate,
            "warmup_steps": warmup,
            "seed": seed,
        }
        write_json(folder.path / CONFIG_FILE, {**record, "result": None})
        history = fit([HistoryCSV(folder.path / "history.csv", steps)])
        save_model(vit, folder.path / "pretrained.keras")
        result = {"steps": total, "loss": float(history.history["loss"][-1])}
        write_json(folder.path / CONFIG_FILE, {**record, "result": result})
    return vit
