"""Input pipelines without TensorFlow: a `keras.utils.PyDataset` of batches made by Python code.

`ImageLoader` reads arrays held in memory (digits, a user's arrays) or image files (a folder's
listing), decoded by Pillow, and yields what `load_dataset`'s `tf.data` pipelines yield: float32
raw pixels (batch, size, size, 3) and int32 labels, or soft labels with MixUp / CutMix. Keras'
`fit` takes it under every backend, and it needs no TensorFlow: a JAX-only GPU image trains on
it. Evaluation transforms and augmentation presets are the same Keras layers as in `tf.data`,
run on the Keras backend (on the CPU); augmentation draws for each image on its own, as
`tf.data`'s per-image map does (a crop layer given a batch draws one box for the whole batch).

Each epoch reads a permutation drawn from (seed, epoch). The processes of a multi-process
data-parallel run share it: process p of P reads its examples at positions p, p + P, p + 2P, ...
(the last `N % P` examples are left out, so every process reads as many), so that together their
batches at one step are the one-process batch at that step.
"""

import copy
import math
import warnings

import keras
import numpy as np
from PIL import Image

from keras_resvit.base.class_names import checked_class_names
from keras_resvit.base.processes import host_cpu
from keras_resvit.base.validation import check_bool, check_int, check_seed
from keras_resvit.data.augmentation import Mixing, get_augmentation
from keras_resvit.data.element_seeds import build, element_seed
from keras_resvit.data.in_memory import checked_arrays
from keras_resvit.data.loader_choice import check_repeats, check_shard
from keras_resvit.data.transforms import check_crop_ratio, evaluation_transform

# What Pillow raises for a file it cannot decode (a truncated or corrupt image among them).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def read_image(path) -> np.ndarray:
    """A JPEG, PNG, GIF (first frame) or BMP file's pixels as (height, width, 3) uint8 RGB,
    decoded by Pillow.

    As `tf.io.decode_image(..., channels=3)`: grey images become RGB, alpha is dropped, 16-bit
    grey keeps its high byte. PNG pixels equal TensorFlow's; JPEG pixels may differ from them
    by a few levels (the two libraries' JPEG decoders round their inverse DCTs differently).

    Args:
        path: the file.

    Returns:
        The pixels.

    Raises:
        OSError: the file is not a decodable image (or truncated).

    Example:
    >>> from PIL import Image
    >>> from keras_resvit.data.loaders import read_image
    >>> Image.new("RGB", (5, 4), (255, 0, 0)).save("red.png")
    >>> pixels = read_image("red.png")
    >>> pixels.shape, pixels.dtype.name, pixels[0, 0].tolist()
    ((4, 5, 3), 'uint8', [255, 0, 0])
    """
    with Image.open(path) as image:
        if image.mode.startswith("I;16"):
            grey = (np.asarray(image).astype("uint16") >> 8).astype("uint8")
            return np.repeat(grey[..., None], 3, axis=-1)
        return np.asarray(image.convert("RGB"))


def read_listed(paths, row, strict, failed):
    """(pixels, row read): the pixels of file `paths[row]`; unless `strict`, a file that fails
    to decode is replaced by the next listed file that decodes, whose row is returned so that
    its own label goes with it; warned of once (`failed`: the paths warned of so far,
    updated)."""
    for offset in range(len(paths)):
        read = (row + offset) % len(paths)
        path = paths[read]
        try:
            return read_image(path), read
        except DECODE_ERRORS as error:
            if strict:
                raise ValueError(f"image {path!r} cannot be decoded: {error}") from None
            if path not in failed:
                failed.add(path)
                warnings.warn(
                    f"Image {path!r} cannot be decoded ({error}); reading the next listed "
                    "file in its place.",
                    stacklevel=3,
                )
    raise ValueError(f"none of the {len(paths)} listed image files can be decoded.")


def _check_source(images, labels, paths, image_size):
    """(images, labels, paths, image_size) checked: arrays as `checked_arrays`, image files
    with their labels, and the output size (an array's own size when None and square)."""
    if (images is None) == (paths is None):
        raise ValueError(
            "ImageLoader reads images=<array (N, height, width, channels)> or paths=<list of "
            "image files>; pass one of them, with labels."
        )
    if paths is not None:
        paths = [str(path) for path in paths]
        labels = np.asarray(labels)
        if (
            labels.shape != (len(paths),)
            or not len(paths)
            or not np.issubdtype(labels.dtype, np.integer)
            or labels.min() < 0
        ):
            raise ValueError(
                f"labels of shape {labels.shape} and dtype {labels.dtype} do not match "
                f"{len(paths)} paths; pass one class index 0, 1, 2, ... per file, and at least "
                "one file."
            )
        check_int("image_size", image_size)
        return None, labels.astype("int32"), paths, image_size
    images, labels = checked_arrays(images, labels)
    if image_size is None and images.shape[1] != images.shape[2]:
        raise ValueError(
            f"image_size=None: the images are {images.shape[1]}x{images.shape[2]}; pass an int."
        )
    check_int("image_size", image_size, none_ok=True)
    return images, labels, None, image_size or images.shape[1]


def _check_reading(batch_size, process_index, process_count, crop_ratio, seed, mixing, flags):
    """Checks the batch, shard, crop, seed and mixing arguments and the bool `flags`
    (name -> value)."""
    check_shard(batch_size, process_index, process_count)
    check_crop_ratio(crop_ratio)
    check_seed(seed)
    for name, value in flags.items():
        check_bool(name, value)
    if not isinstance(mixing, (bool, Mixing)):
        raise ValueError(f"mixing={mixing!r} is not valid; pass True, False or a Mixing.")


class ImageLoader(keras.utils.PyDataset):
    """Batches of (float32 pixels in [0, 255], labels) from arrays or image files, no TensorFlow.

    Without `augment`, images get the evaluation transform: the shorter side resized to
    `image_size / crop_ratio`, then the central `image_size` square (`evaluation_transform`);
    arrays already `image_size` square are left as they are. With `augment`, each image goes
    through the augmentation layer instead, on its own. Random layers draw from their seeded
    state in the order batches are made: with `workers=1` (the default) a loader gives the
    same epochs every run. `model.fit` also reorders the batches of each epoch unless given
    `shuffle=False`.

    Args:
        images: (N, height, width, channels) pixels 0-255 held in memory; or None with `paths`.
        labels: N class indices 0, 1, 2, ...
        paths: image files (JPEG, PNG), e.g. `list_image_folder`'s; or None with `images`.
        image_size: output height and width; default (arrays only) the images' own size.
        batch_size: examples per batch across all processes.
        augment: None, a name in `AUGMENTATION_PRESETS` or a Keras layer mapping one image to
            an `image_size` image.
        mixing: the preset's MixUp/CutMix (True), none (False), or a `Mixing`; labels become
            float32 (batch, num_classes) and sum to 1.
        crop_ratio: the evaluation transform's share of the resized shorter side, in [0.25, 1]
            (`load_dataset` chooses it from the images' size).
        shuffle: read a new permutation of the examples every epoch.
        seed: seed of the permutations, the augmentation and the mixing.
        drop_remainder: drop the last partial batch of an epoch.
        strict: raise on a file that fails to decode, instead of warning and reading the next
            listed file in its place (an epoch keeps its length).
        process_index: this process's index among `process_count` (`jax.process_index()`).
        process_count: processes reading the data (`jax.process_count()`); each reads a shard
            of `batch_size // process_count` examples per batch.
        class_names: the classes' names; default "0", "1", ... up to the largest label.
        workers: threads (or processes) making batches in parallel, for `keras.utils.PyDataset`.
        use_multiprocessing: workers are processes rather than threads.
        max_queue_size: batches made ahead by the workers.
        repeated_augmentation: each epoch reads ceil(N / r) examples r times each, differently
            augmented, and keeps its N examples (Hoffer et al. 2020, Berman et al. 2019; timm's
            `RepeatAugSampler`: consecutive copies, which several processes share out).

    Attributes:
        class_names, num_classes: the classes.
        provenance: what the examples are and how they are read (set by `load_dataset`).
        epoch: the epoch whose permutation is read; `on_epoch_end` advances it.
        unaugmented: the same examples in order, without augmentation or mixing, all of them.
        examples: this process's examples per epoch.
        augmented: whether its batches are augmented or mixed.

    Raises:
        ValueError: for a bad argument: images and paths both or neither given, labels that
            do not match, a batch size that `process_count` does not divide, an epoch of no
            batch.

    Example:
    >>> import numpy as np
    >>> from keras_resvit.data.loaders import ImageLoader
    >>> x = np.random.default_rng(0).uniform(0, 255, (10, 8, 8, 3))
    >>> loader = ImageLoader(x, np.arange(10) % 2, batch_size=4, shuffle=True)
    >>> images, labels = loader[0]
    >>> len(loader), images.shape, labels.dtype.name, loader.num_classes
    (3, (4, 8, 8, 3), 'int32', 2)
    """

    def __init__(
        self,
        images=None,
        labels=None,
        *,
        paths=None,
        image_size: int | None = None,
        batch_size: int = 32,
        augment=None,
        mixing: Mixing | bool = False,
        crop_ratio: float = 1.0,
        shuffle: bool = False,
        seed: int = 0,
        drop_remainder: bool = False,
        strict: bool = False,
        process_index: int = 0,
        process_count: int = 1,
        class_names=None,
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int = 10,
        repeated_augmentation: int = 1,
    ):
        flags = {"shuffle": shuffle, "drop_remainder": drop_remainder, "strict": strict}
        check_repeats(repeated_augmentation, shuffle)
        self.repeated_augmentation = repeated_augmentation
        _check_reading(batch_size, process_index, process_count, crop_ratio, seed, mixing, flags)
        check_bool("use_multiprocessing", use_multiprocessing)
        check_int("workers", workers)
        check_int("max_queue_size", max_queue_size)
        super().__init__(workers, use_multiprocessing, max_queue_size)
        self.images, self.labels, self.paths, self.image_size = _check_source(
            images, labels, paths, image_size
        )
        count = int(self.labels.max()) + 1
        if class_names is not None:
            class_names = checked_class_names(class_names)
            if len(class_names) < count:
                raise ValueError(
                    f"class_names lists {len(class_names)} classes, but the labels go up to "
                    f"{count - 1}; pass one name per class, at least {count}."
                )
        self.class_names = class_names or [str(i) for i in range(count)]
        self.num_classes = len(self.class_names)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_remainder, self.strict, self.crop_ratio = drop_remainder, strict, crop_ratio
        self.process_index, self.process_count = process_index, process_count
        self.examples = len(self.labels) // process_count  # this process's, per epoch
        self.epoch, self.provenance, self._order = 0, None, (None, None)
        self._failed = set()
        # Images of the output size pass as they are, unless a crop was asked for.
        self._resize = (
            paths is not None
            or self.images.shape[1:3] != (self.image_size,) * 2
            or crop_ratio != 1.0
        )
        self._transform = evaluation_transform(self.image_size, crop_ratio)
        # Each process draws its own augmentations: its images are not the others'.
        layer_seed = seed + process_index
        self._layer, preset_mixing = get_augmentation(augment, self.image_size, layer_seed)
        self._mixing = _mixing(preset_mixing if mixing is True else mixing or None, layer_seed)
        if self._layer is not None:
            build(self._layer, self.image_size)
        if not len(self):
            raise ValueError(
                f"{self.examples} examples per process make no batch of "
                f"{batch_size // process_count} (drop_remainder=True); pass a smaller batch_size."
            )

    @property
    def augmented(self) -> bool:
        """Whether its batches are augmented or mixed (see `load_dataset`)."""
        return self._layer is not None or self._mixing is not None

    def __len__(self):
        per_process = self.batch_size // self.process_count
        if self.drop_remainder:
            return self.examples // per_process
        return math.ceil(self.examples / per_process)

    def positions(self) -> np.ndarray:
        """The indices of the examples this process reads in the current epoch, in order."""
        epoch, order = self._order
        if epoch != self.epoch:
            count = len(self.labels)
            if self.shuffle:
                rng = np.random.default_rng([self.seed % 2**64, self.epoch])
                order = rng.permutation(count)
            else:
                order = np.arange(count)
            repeats = self.repeated_augmentation
            order = np.repeat(order[: math.ceil(count / repeats)], repeats)[:count]
            order = order[: count - count % self.process_count]
            order = order[self.process_index :: self.process_count]
            self._order = (self.epoch, order)
        return order

    def on_epoch_end(self):
        self.epoch += 1

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch index {index} is out of range: {len(self)} batches.")
        per_process = self.batch_size // self.process_count
        rows = self.positions()[index * per_process : (index + 1) * per_process]
        if self.images is None:  # a file that fails to decode brings its stand-in's label
            images, rows = zip(*(self._read(row) for row in rows), strict=True)
            images, rows = [image.astype("float32") for image in images], np.array(rows)
        else:
            images = self.images[rows]
        labels = self.labels[rows]
        # Each image draws from its own seed: the same batch whatever order (or thread)
        # asks for it, as an uninterrupted run saw it.
        key = [self.seed % 2**64, self.epoch, index, self.process_index]
        with host_cpu():
            if self._layer is not None:
                seeds = np.random.default_rng([*key, 1]).integers(0, 2**31, (len(rows), 2))
                pairs = zip(images, seeds, strict=True)
                images = np.stack([self._augmented(x, seed) for x, seed in pairs])
            elif not self._resize:
                images = np.asarray(images, "float32")
            elif self.images is not None:
                images = _numpy(self._transform(images))
            else:
                images = np.stack([_numpy(self._transform(image)) for image in images])
            if self._mixing is None:
                return images, labels
            return self._mixing(images, labels, self.num_classes, np.random.default_rng(key))

    def _augmented(self, image, seed):
        with element_seed((int(seed[0]), int(seed[1]))):
            return _numpy(self._layer(image))

    def _read(self, row):
        return read_listed(self.paths, row, self.strict, self._failed)

    @property
    def unaugmented(self) -> "ImageLoader":
        """The same examples in order (all processes' and the last partial batch), evaluation-
        transformed with `crop_ratio`: what `PixelMean` averages."""
        plain = copy.copy(self)
        plain._layer = plain._mixing = None
        plain.shuffle = plain.drop_remainder = False
        plain.process_index, plain.process_count = 0, 1
        plain.epoch, plain._order = 0, (None, None)
        return plain


def _numpy(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


def _mixing(mixing, seed):
    """`mixing(images, labels, num_classes, rng) -> (images, soft labels)`, or None: smoothed
    one-hot labels, then MixUp or CutMix (one per batch, drawn from `rng`)."""
    if mixing is None or not (mixing.mixup_alpha or mixing.cutmix_alpha):
        return None
    mixup, cutmix = mixing.layers(seed)

    def mix(images, labels, num_classes, rng):
        smoothing = mixing.label_smoothing
        soft = np.eye(num_classes, dtype="float32")[labels] * (1.0 - smoothing)
        soft += smoothing / num_classes
        if mixup is None or cutmix is None:
            layer = mixup or cutmix
        else:
            layer = cutmix if rng.random() < mixing.cutmix_prob else mixup
        out = layer({"images": images, "labels": soft})
        return _numpy(out["images"]), _numpy(out["labels"])

    return mix
