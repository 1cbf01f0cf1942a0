"""Published weights by name: where each file is, what it holds, and where that is said.

`create_model(name, weights=TAG)` looks the tag up here, downloads the file once
(`keras_resvit.weights.download`) and converts it. Each entry records the file's URL and
format, the hash its publisher lists (or None: the first download's SHA-256 is then recorded
and checked after), the resolution and preprocessing it was trained with, its classes, its
license, the published ImageNet-1k top-1 accuracy and the source of those facts. The table
itself is `catalog_table.py`. Listing imports no backend.
"""

import dataclasses
import difflib
import gzip
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import PurePosixPath

# Suffixes that mark a `weights=` string as a file path rather than a name.
FILE_SUFFIXES = (".h5", ".keras", ".npz", ".safetensors", ".pth", ".pt", ".bin")
# Keras 3 reads a `.h5` file as its own weights only when it ends so.
KERAS_WEIGHTS_SUFFIX = ".weights.h5"
FORMATS = ("keras_applications", "vit_npz", "bit_npz", "timm", "torchvision", "keras")
# Digests the cache checks: hashlib's (not shake_*, whose digests need a length) and
# torchvision's, a SHA-256 prefix in the file name.
HASH_ALGORITHMS = (
    "sha256_prefix",
    *sorted(name for name in hashlib.algorithms_guaranteed if not name.startswith("shake")),
)
IMAGENET_1K = "imagenet-1k"
IMAGENET_21K = "imagenet-21k"
# Bundled class names, in the heads' order: torchvision's ImageNet-1k names (BSD-3-Clause),
# and the WordNet lemmas of Google's ImageNet-21k order (timm's imagenet21k_goog_synsets.txt
# and imagenet_synset_to_lemma.txt, Apache-2.0; the synset id is added to a lemma that repeats).
CLASS_FILES = {IMAGENET_1K: "imagenet1k_classes.txt", IMAGENET_21K: "imagenet21k_classes.txt.gz"}


@dataclass(frozen=True)
class NamedWeights:
    """One published weights file, for one or more registry names (`models`)."""

    models: tuple
    tag: str
    url: str
    format: str  # one of FORMATS ("keras": a keras_resvit `.weights.h5` or `.keras` file)
    image_size: int
    num_classes: int  # 0: no classifier (a feature extractor's weights)
    preprocessing: str
    top1: float | None  # published ImageNet-1k top-1, percent
    license: str
    source: str
    hash: str | None = None
    hash_algorithm: str | None = None  # "md5", "sha256" or "sha256_prefix" (torchvision)
    top1_source: str | None = None
    notes: str = ""
    top1_image_size: int | None = None  # where top-1 was measured at another size (a test size)
    build: dict = field(default_factory=dict)  # further build arguments the weights need

    @property
    def model(self) -> str:
        return self.models[0]

    @property
    def file_name(self) -> str:
        """The cache's name for the file: `<model>.<tag><suffix>` (`.weights.h5` kept whole)."""
        return f"{self.model}.{self.tag}{url_suffix(self.url)}"

    @property
    def classes(self) -> str | None:
        return {1000: IMAGENET_1K, 21843: IMAGENET_21K}.get(self.num_classes)

    def build_arguments(self, family: str) -> dict:
        """Builder arguments that make the model these weights were trained as."""
        arguments = {"preprocessing": self.preprocessing, **self.build}
        if family in ("vit", "hybrid_vit"):
            arguments["image_size"] = self.image_size
        if self.num_classes:
            arguments["num_classes"] = self.num_classes
        return arguments


def url_suffix(url: str) -> str:
    """The suffix a weights file at `url` keeps: its last one, or `.weights.h5` whole."""
    name = PurePosixPath(url).name
    if name.lower().endswith(KERAS_WEIGHTS_SUFFIX):
        return name[-len(KERAS_WEIGHTS_SUFFIX) :]
    return PurePosixPath(name).suffix


def _read_catalog():
    text = resources.files("keras_resvit.weights").joinpath("catalog.json").read_text("utf-8")
    return [
        NamedWeights(**{**entry, "models": tuple(entry["models"])}) for entry in json.loads(text)
    ]


# Every entry; `register_weights` adds to it.
CATALOG = _read_catalog()


def _entry_problem(entry: NamedWeights):
    """The first invalid field of `entry` as (field, problem), or None."""
    from keras_resvit.models.registry import REGISTRY

    models = entry.models
    if not isinstance(models, (tuple, list)) or not models:
        return "models", "must be a non-empty tuple of registry names"
    unknown = [name for name in models if not isinstance(name, str) or name not in REGISTRY]
    if unknown:
        return "models", f"holds {unknown}, which are not registry names (kr.list_models())"
    tag = entry.tag
    if not isinstance(tag, str) or not tag.strip():
        return "tag", "must be a non-empty str"
    if "/" in tag or os.sep in tag or tag.lower().endswith(FILE_SUFFIXES):
        return "tag", f"looks like a file path (a '/' or a suffix of {FILE_SUFFIXES}); use a name"
    if not isinstance(entry.url, str) or not url_suffix(entry.url).lower().endswith(FILE_SUFFIXES):
        return "url", f"must be a str naming a file that ends in one of {FILE_SUFFIXES}"
    if entry.format not in FORMATS:
        return "format", f"is not one of {list(FORMATS)}"
    for name, minimum in (("image_size", 1), ("num_classes", 0)):
        value = getattr(entry, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            return name, f"must be an int >= {minimum}"
    size = entry.top1_image_size
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        return "top1_image_size", "must be None or an int >= 1"
    return _hash_problem(entry) or _text_problem(entry) or _build_problem(entry)


def _hash_problem(entry: NamedWeights):
    """`entry.hash` must be what `download` computes: a lowercase hex digest of its
    algorithm's length (torchvision's prefix: up to 64 characters), or None."""
    algorithm = entry.hash_algorithm
    if algorithm is not None and algorithm not in HASH_ALGORITHMS:
        return "hash_algorithm", f"is not None nor one of {list(HASH_ALGORITHMS)}"
    if entry.hash is None:
        return None
    if algorithm is None:
        return "hash_algorithm", "must name the algorithm of hash (e.g. 'sha256')"
    size = "1 to 64" if algorithm == "sha256_prefix" else hashlib.new(algorithm).digest_size * 2
    hexadecimal = isinstance(entry.hash, str) and re.fullmatch(r"[0-9a-f]+", entry.hash)
    if not hexadecimal or (
        len(entry.hash) > 64 if algorithm == "sha256_prefix" else len(entry.hash) != size
    ):
        return "hash", f"must be a lowercase hex {algorithm} digest of {size} characters or None"
    return None


def _text_problem(entry: NamedWeights):
    """The fields `describe` and `create_model` read: a preset, a percentage, texts."""
    from keras_resvit.layers.normalization import NORMALIZATION_PRESETS

    if entry.preprocessing not in NORMALIZATION_PRESETS:
        return "preprocessing", f"is not one of the presets {list(NORMALIZATION_PRESETS)}"
    top1 = entry.top1
    if top1 is not None and (
        not isinstance(top1, (int, float)) or isinstance(top1, bool) or not 0 <= top1 <= 100
    ):
        return "top1", "must be None or the published top-1 accuracy, a percentage in [0, 100]"
    for name in ("license", "source"):
        if not isinstance(getattr(entry, name), str) or not getattr(entry, name).strip():
            return name, "must be a non-empty str"
    if entry.top1_source is not None and not isinstance(entry.top1_source, str):
        return "top1_source", "must be a str or None"
    if not isinstance(entry.notes, str):
        return "notes", "must be a str"
    return None


def _build_problem(entry: NamedWeights):
    """`entry.build` must hold arguments of the builder of every one of its models."""
    from keras_resvit.models.registry import check_overrides, get_spec

    if not isinstance(entry.build, dict):
        return "build", "must be a dict of build arguments"
    for model in entry.models:
        try:
            check_overrides(get_spec(model).family, entry.build)
        except ValueError as error:
            return "build", f"does not fit {model!r}: {str(error).rstrip('.')}"
    return None


def register_weights(entry: NamedWeights) -> None:
    """Adds published weights (e.g. a team's own release on an internal server) by name.

    `entry.models` may be one registry name (a str) or a tuple of them.

    Raises:
        ValueError: `entry` is not a `NamedWeights`, one of its fields is invalid (named with
            the value given and what is valid), or one of its registry names already has
            weights of that tag.

    Example:
    >>> from keras_resvit.weights.catalog import register_weights, NamedWeights
    >>> register_weights(NamedWeights(models="resnet20", tag="mine",
    ...     url="https://example.org/resnet20.weights.h5", format="keras", image_size=32,
    ...     num_classes=10, preprocessing="cifar", top1=None, license="MIT",
    ...     source="our release"))  # doctest: +SKIP
    """
    if not isinstance(entry, NamedWeights):
        raise ValueError(
            f"entry={entry!r} is not valid; pass a keras_resvit.weights.NamedWeights (got "
            f"{type(entry).__name__})."
        )
    if isinstance(entry.models, str):  # one registry name, not its characters
        entry = dataclasses.replace(entry, models=(entry.models,))
    problem = _entry_problem(entry)
    if problem is not None:
        name, what = problem
        raise ValueError(f"entry.{name}={getattr(entry, name)!r} is not valid: it {what}.")
    entry = dataclasses.replace(entry, models=tuple(entry.models))
    for model in entry.models:
        if any(model in other.models and other.tag == entry.tag for other in CATALOG):
            raise ValueError(f"{model!r} already has weights named {entry.tag!r}.")
    CATALOG.append(entry)


def list_weights(name: str | None = None):
    """The weights names of a registry name, or {name: [tags]} of every name that has some.

    Example:
    >>> from keras_resvit.weights.catalog import list_weights
    >>> "imagenet" in list_weights("resnet50")
    True
    >>> list_weights("resnet20")
    []
    """
    if name is not None:
        from keras_resvit.models.registry import get_spec

        get_spec(name)  # an unknown name is an error, not a model without weights
        return [entry.tag for entry in CATALOG if name in entry.models]
    table = {}
    for entry in CATALOG:
        for model in entry.models:
            table.setdefault(model, []).append(entry.tag)
    return dict(sorted(table.items()))


def weights_info(name: str, tag: str) -> NamedWeights:
    """The catalog entry of `name`'s weights `tag`, or ValueError naming the valid tags."""
    for entry in CATALOG:
        if name in entry.models and entry.tag == tag:
            return entry
    tags = list_weights(name)
    close = difflib.get_close_matches(str(tag), tags, n=3)
    hint = f" Did you mean {close}?" if close else ""
    raise ValueError(
        f"weights={tag!r} is neither a file nor a name of {name}'s published weights "
        f"({tags or 'it has none'}).{hint} Pass a name, or the path of a weights file "
        f"({', '.join(FILE_SUFFIXES)})."
    )


def named_weights(name: str, weights) -> NamedWeights | None:
    """The catalog entry `weights` names, or None when `weights` is a file path.

    A string is a path when it names an existing file, holds a folder separator or ends in a
    weights file's suffix; any other string must be a name of `name`'s weights.

    Raises:
        ValueError: an unknown name (with the valid and the closest names), or `weights`
            neither a str nor a path.
    """
    if isinstance(weights, os.PathLike):
        return None
    if not isinstance(weights, str):
        raise ValueError(
            f"weights={weights!r} is not valid; pass None, a name of {name!r}'s weights "
            f"({list_weights(name) or 'it has none'}), or a weights file path."
        )
    is_path = (
        os.path.exists(weights)
        or os.sep in weights
        or "/" in weights
        or weights.lower().endswith(FILE_SUFFIXES)
    )
    return None if is_path else weights_info(name, weights)


def class_names_of(entry: NamedWeights) -> list | None:
    """The class names of the weights' classifier (ImageNet-1k's and -21k's are bundled), or
    None for other heads."""
    if entry.classes is None:
        return None
    data = resources.files("keras_resvit.weights").joinpath(CLASS_FILES[entry.classes]).read_bytes()
    if CLASS_FILES[entry.classes].endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("utf-8").splitlines()


def describe(entry: NamedWeights) -> str:
    """One line: tag, format, resolution, classes, top-1 and license."""
    classes = {0: "no classifier", 1000: "ImageNet-1k", 21843: "ImageNet-21k"}.get(
        entry.num_classes, f"{entry.num_classes} classes"
    )
    top1 = f"top-1 {entry.top1:.1f}%" if entry.top1 is not None else "no ImageNet-1k top-1"
    size = f"{entry.image_size} px"
    if entry.top1_image_size not in (None, entry.image_size):
        size = f"trained at {size}"
        top1 += f" at {entry.top1_image_size} px"
    return f"{entry.tag}: {entry.format}, {size}, {classes}, {top1}, {entry.license}"
