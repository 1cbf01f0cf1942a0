"""Registry: model names -> builder configs (data, not code).

Each entry names a builder family and the keyword arguments that make the named model;
`keras_resvit.factory.create_model(name, **overrides)` calls the builder with the entry's
arguments updated by the overrides. Families name their builder in `BUILDERS`, imported when
first used: listing and looking up names imports no backend.
"""

import difflib
import fnmatch
import importlib
import inspect
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: which builder, with which arguments, and a one-line description."""

    family: str
    kwargs: dict = field(default_factory=dict)
    description: str = ""


# Family -> "module:function" of its builder.
BUILDERS = {
    "resnet": "keras_resvit.models.resnet:build_resnet",
    "vit": "keras_resvit.models.vit:build_vit",
    "hybrid_vit": "keras_resvit.models.hybrid:build_hybrid_vit",
    "vgg": "keras_resvit.models.baselines:build_vgg",
    "alexnet": "keras_resvit.models.baselines:build_alexnet",
    "efficientnetv2": "keras_resvit.models.baselines:build_efficientnetv2",
}

REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, spec: ModelSpec) -> None:
    """Adds a name to the registry (used by the model families and by users)."""
    if spec.family not in BUILDERS:
        raise ValueError(f"family={spec.family!r} has no builder; valid: {sorted(BUILDERS)}.")
    REGISTRY[name] = spec


def _register_resnets():
    for depth in (18, 34, 50, 101, 152):
        register(f"resnet{depth}", ModelSpec("resnet", {"depth": depth}, f"ResNet-{depth} v1.5"))
    # The paper's bottleneck (He et al. 2016, keras.applications' ResNet50): the stride on the
    # first 1x1 of a downsampling block. "resnet50" is v1.5 (torchvision, timm), the stride on
    # the 3x3: same parameters, 4.1 G multiply-adds for 3.8, and about half a point better.
    for depth in (50, 101, 152):
        register(
            f"resnet{depth}v1",
            ModelSpec(
                "resnet", {"depth": depth, "version": "v1"}, f"ResNet-{depth} as in the paper"
            ),
        )
    # ResNet-D (He et al. 2019, "Bag of Tricks"): the deep 3x3 stem and average-pool
    # downsampling in the projection shortcuts, timm's resnet{18,34,50,101,152}d.
    for depth in (18, 34, 50, 101, 152):
        register(
            f"resnet{depth}d",
            ModelSpec(
                "resnet",
                {"depth": depth, "stem": "deep", "shortcut": "D"},
                f"ResNet-{depth}-D (deep stem, average-pool shortcuts)",
            ),
        )
    for depth in (18, 34):
        register(
            f"plain{depth}",
            ModelSpec("resnet", {"depth": depth, "plain": True}, f"plain-{depth} (no shortcuts)"),
        )
    for depth in (50, 101, 152):
        register(
            f"resnet{depth}v2",
            ModelSpec(
                "resnet", {"depth": depth, "version": "v2"}, f"pre-activation ResNet-{depth}"
            ),
        )
    # The six released BiT models (Kolesnikov et al. 2020), and R50x2, R152x1 and R200x3 of the
    # ViT paper's scaling study (Dosovitskiy et al. 2021, Section 4.4), built the BiT way.
    bits = ((50, 1), (50, 2), (50, 3), (101, 1), (101, 3), (152, 1), (152, 2), (152, 4), (200, 3))
    for depth, width in bits:
        bit = {
            "depth": depth,
            "version": "v2",
            "width": width,
            "norm": "group",
            "weight_standardization": True,
            "preprocessing": "inception",  # BiT's inputs are in [-1, 1]
        }
        register(
            f"bit_r{depth}x{width}",
            ModelSpec("resnet", bit, f"BiT ResNet-{depth}x{width} (GroupNorm + WS)"),
        )
    for depth in (50, 101):
        register(
            f"se_resnet{depth}",
            ModelSpec("resnet", {"depth": depth, "se_ratio": 1 / 16}, f"SE-ResNet-{depth} (r=16)"),
        )
    for depth in (20, 32, 44, 56, 110, 1202):
        register(
            f"resnet{depth}",
            ModelSpec(
                "resnet", {"depth": depth, "stem": "cifar"}, f"CIFAR ResNet-{depth}, option A"
            ),
        )
        if depth != 1202:
            register(
                f"plain{depth}",
                ModelSpec(
                    "resnet",
                    {"depth": depth, "stem": "cifar", "plain": True},
                    f"CIFAR plain-{depth}",
                ),
            )


_register_resnets()


def _register_vits():
    sizes = {"ti": "Ti", "s": "S", "b": "B", "l": "L", "h": "H"}
    for size, patch in (
        ("ti", 16),
        ("s", 16),
        ("s", 32),
        ("b", 8),
        ("b", 16),
        ("b", 32),
        ("l", 16),
        ("l", 32),
        ("h", 14),
    ):
        variant = f"{sizes[size]}/{patch}"
        register(f"vit_{size}{patch}", ModelSpec("vit", {"variant": variant}, f"ViT-{variant}"))
    register(
        "r50_vit_b16",
        ModelSpec(
            "hybrid_vit",
            {"backbone": "r50", "variant": "B/16"},
            "R50+ViT-B/16 hybrid (BiT-style ResNet-50, stages 3,4,9)",
        ),
    )
    # The paper's hybrid names give the backbone's total downsampling after the "/"
    # (Dosovitskiy et al. 2021, Section 4.4), so R50+ViT-B/32 is option (i) of Section 4.1:
    # the regular ResNet-50's stage-4 output, 7x7 tokens at 224 (timm's "r50_s32" layout).
    register(
        "r50_vit_b32",
        ModelSpec(
            "hybrid_vit",
            {"backbone": "r50_stage4", "variant": "B/32"},
            "R50+ViT-B/32 hybrid (BiT-style ResNet-50, stages 3,4,6,3: 32x, 49 tokens at 224)",
        ),
    )


_register_vits()


def _register_classics():
    """The baselines compared with ResNet and ViT: VGG, AlexNet and EfficientNetV2."""
    for depth in (16, 19):
        register(f"vgg{depth}", ModelSpec("vgg", {"depth": depth}, f"VGG-{depth}"))
    register("alexnet", ModelSpec("alexnet", {}, "AlexNet (torchvision single-tower layout)"))
    register(
        "alexnet_paper",
        ModelSpec("alexnet", {"layout": "paper"}, "AlexNet as published (two towers, LRN, 227 px)"),
    )
    for variant in ("s", "m", "l"):
        register(
            f"efficientnetv2_{variant}",
            ModelSpec(
                "efficientnetv2",
                {"variant": variant},
                f"EfficientNetV2-{variant.upper()} (keras.applications, untrained)",
            ),
        )


_register_classics()


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registry names, optionally filtered by a glob pattern such as "resnet*".

    Example:
    >>> import keras_resvit as kr
    >>> kr.list_models("bit_*")[:2]
    ['bit_r101x1', 'bit_r101x3']
    """
    if pattern is not None and not isinstance(pattern, str):
        raise ValueError(f"pattern={pattern!r} must be a glob string such as 'resnet*', or None.")
    names = sorted(REGISTRY)
    return names if pattern is None else fnmatch.filter(names, pattern)


def get_spec(name: str) -> ModelSpec:
    """The registry entry for `name`; an unknown name raises ValueError with close matches."""
    if not isinstance(name, str):
        raise ValueError(
            f"name={name!r} is not valid; pass a registry name (a str), e.g. 'resnet50'; see "
            "keras_resvit.list_models()."
        )
    if name not in REGISTRY:
        close = difflib.get_close_matches(name.lower(), REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"name={name!r} is not a registered model.{hint} "
            "See keras_resvit.list_models() (keras-resvit list) for all names."
        )
    return REGISTRY[name]


def builder(family: str):
    """The builder function of a registered family, e.g. `build_resnet` for "resnet"."""
    target = BUILDERS[family]
    if callable(target):
        return target
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def check_overrides(family: str, overrides: dict) -> None:
    """Unknown override names raise ValueError with close matches, not the builder's TypeError."""
    build = builder(family)
    parameters = inspect.signature(build).parameters
    # A builder that passes `**options` on names them in `keyword_options`.
    forwarded = getattr(build, "keyword_options", None)
    if forwarded is None and any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
        return  # the builder validates its own keyword arguments
    valid = [k for k, p in parameters.items() if k != "name" and p.kind != p.VAR_KEYWORD]
    valid += list(forwarded or ())
    for key in overrides:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=2, cutoff=0.6)
            if key == "input_shape" and "image_size" in valid:  # a ViT: RGB images of a size
                close = ["image_size"]
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(
                f"override {key}={overrides[key]!r} is not an argument of {build.__name__}."
                f"{hint} Valid: {valid}."
            )
