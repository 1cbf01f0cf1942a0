"""A ViT at another resolution or patch size: position embeddings resampled to the new grid
(the ViT paper's higher-resolution fine-tuning) and the patch embedding PI-resized (FlexiViT)."""

import math

import keras
import numpy as np

from keras_resvit.base.class_names import model_class_names, set_class_names
from keras_resvit.base.validation import check_int, check_model
from keras_resvit.layers.vit_layers import PositionEmbedding
from keras_resvit.models.common import is_vit, layer_config, rebuild_model
from keras_resvit.models.vit_config import any_size, image_size_pair


def resample_position_embeddings(posemb, new_grid, *, old_grid=None, num_prefix_tokens=0):
    """Bicubically resamples the grid part of position embeddings to another grid size.

    The prefix tokens (the class token) keep their embeddings; the grid is interpolated by
    location in the image, as in the paper's higher-resolution fine-tuning. Half-pixel
    centers, Keys' cubic kernel (a = -0.5) and antialiasing when shrinking, identical on every
    backend; a grid resampled to its own size is returned unchanged.

    Args:
        posemb: array `(1, num_prefix_tokens + grid_h * grid_w, dim)`.
        new_grid: (height, width) of the new grid, or an int for a square one.
        old_grid: (height, width) of `posemb`'s grid; default square.
        num_prefix_tokens: tokens before the grid (1 with a class token).

    Returns:
        A NumPy array `(1, num_prefix_tokens + new_h * new_w, dim)`.

    Example:
    >>> from keras_resvit.models.vit_resize import resample_position_embeddings
    >>> import numpy as np
    >>> resample_position_embeddings(np.zeros((1, 197, 768)), (24, 24), num_prefix_tokens=1).shape
    (1, 577, 768)
    """
    posemb = np.asarray(posemb)
    if posemb.ndim != 3 or posemb.shape[0] != 1:
        raise ValueError(
            f"posemb of shape {posemb.shape} is not valid; expected position embeddings "
            "(1, tokens, dim)."
        )
    tokens = posemb.shape[1]
    check_int("num_prefix_tokens", num_prefix_tokens, minimum=0)
    if num_prefix_tokens >= tokens:
        raise ValueError(
            f"num_prefix_tokens={num_prefix_tokens} leaves no grid of posemb's {tokens} tokens; "
            "expected the tokens before the grid (1 with a class token)."
        )
    new_grid = image_size_pair(new_grid, "new_grid")
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    if old_grid is None:
        side = math.isqrt(grid.shape[1])
        if side * side != grid.shape[1]:
            raise ValueError(
                f"old_grid=None but the {grid.shape[1]} grid tokens are not a square; pass "
                "old_grid=(height, width)."
            )
        old_grid = (side, side)
    old_grid = image_size_pair(old_grid, "old_grid")
    if old_grid[0] * old_grid[1] != grid.shape[1]:
        raise ValueError(
            f"old_grid={old_grid} holds {old_grid[0] * old_grid[1]} tokens, but posemb has "
            f"{grid.shape[1]} after its {num_prefix_tokens} prefix token(s)."
        )
    if old_grid == new_grid:
        return posemb
    grid = grid.reshape(1, *old_grid, posemb.shape[-1])
    grid = keras.ops.image.resize(
        grid, tuple(new_grid), interpolation="bicubic", antialias=True, data_format="channels_last"
    )
    grid = keras.ops.convert_to_numpy(grid).reshape(1, -1, posemb.shape[-1])
    return np.concatenate([prefix, grid.astype(posemb.dtype)], axis=1)


def _resampled_weights(old, new):
    if new.name == "patch_embedding" and tuple(new.kernel_size) != tuple(old.kernel_size):
        kernel, bias = old.get_weights()
        return [pi_resize_kernel(kernel, new.kernel_size), bias]
    if isinstance(new, PositionEmbedding):
        (posemb,) = old.get_weights()
        return [
            resample_position_embeddings(
                posemb,
                new.grid_size,
                old_grid=old.grid_size,
                num_prefix_tokens=old.num_prefix_tokens,
            )
        ]
    return old.get_weights()


def token_grid(model, height, width):
    """The patch grid (rows, columns) of a ViT `model` for an input of height x width pixels
    (what a model of any input size, `image_size=None`, makes of that input)."""
    cells = keras.Model(model.inputs, model.get_layer("patch_embedding").output)
    return tuple(cells.compute_output_shape((1, height, width, model.input_shape[-1]))[1:3])


def _pixels_per_token(model, layer):
    """Input pixels per token side: the patch size of a plain ViT, the total downsampling of a
    hybrid's patch embedding."""
    height = model.input_shape[1]
    if height is not None:
        return height // layer.grid_size[0]
    probe = 4096  # a model of any input size: its grid at a probe size (exact up to patch 64)
    return probe // token_grid(model, probe, probe)[0]


def _follow_the_grid(config, name, dynamic):
    """Makes the position embedding `name` read each input's grid from the patch map
    (`dynamic`) or use its stored grid, in a functional model's config."""
    (entry,) = (e for e in config["layers"] if e["name"] == name)
    if entry["config"].get("dynamic_size", False) == dynamic:
        return
    node = entry["inbound_nodes"][0]
    if dynamic:
        tokens = node["args"][0]
        patch_map = {
            "class_name": "__keras_tensor__",
            "config": {**tokens["config"], "keras_history": ["patch_embedding", 0, 0]},
        }
        node["args"] = [[tokens, patch_map], *node["args"][1:]]
        entry["config"]["dynamic_size"] = True
    else:
        node["args"] = [node["args"][0][0], *node["args"][1:]]
        entry["config"].pop("dynamic_size")


def resize_vit(
    model: keras.Model, image_size: int | tuple | None = None, *, patch_size: int | None = None
) -> keras.Model:
    """The same ViT (plain or hybrid) at another input resolution or patch size, every weight kept.

    At another `image_size` the patch size stays, so the sequence grows or shrinks; learned
    position embeddings are resampled bicubically (`resample_position_embeddings`), the class
    token's untouched. With `patch_size` (FlexiViT, Beyer et al. 2023) the patch-embedding
    kernel is PI-resized (`pi_resize_kernel`): a patch upsampled to the new size gives the
    token the old kernel gave the original patch, so one checkpoint serves several patch sizes
    (and sequence lengths); the position embeddings follow the new grid. Works on models
    loaded from `.keras` files: the new model comes from `model`'s config.

    `image_size=(None, None)` makes a model of any input size (as `build_vit(image_size=None)`):
    the embeddings are kept for `model`'s grid and resampled to each input's grid when it
    runs, so at every size it computes what `resize_vit(model, size)` computes. A fixed size
    given to such a model bakes that size in again.

    Args:
        model: a model built by `build_vit` or `build_hybrid_vit` (or loaded from one).
        image_size: new height and width (an int or a tuple), divisible by the patch size;
            `(None, None)`: any size; default the model's.
        patch_size: new patch size of a plain ViT (not a hybrid, whose "patches" are feature
            map cells); default the model's. The image size must be divisible by it.

    Returns:
        A new `keras.Model`, carrying `model`'s class names; `model` is left unchanged.

    Raises:
        ValueError: `model` is not a ViT, `patch_size` with a hybrid, or a size that does not
            divide.

    Example:
    >>> import keras_resvit as kr
    >>> model = kr.build_vit("Ti/16", image_size=32, num_classes=10)
    >>> kr.resize_vit(model, 48).input_shape
    (None, 48, 48, 3)
    >>> flexi = kr.resize_vit(model, patch_size=8)  # a 4x4 grid of 16x16 patches -> 8x8 grid
    >>> flexi.get_layer("position_embedding").grid_size
    (4, 4)
    >>> kr.resize_vit(model, (None, None)).input_shape  # any size, e.g. 32x48 or 64x64
    (None, None, None, 3)
    """
    check_model("model", model)
    check_int("patch_size", patch_size, none_ok=True)  # before comparing: 8.0 is not a size
    if not is_vit(model):
        raise ValueError(
            f"model={model.name!r} is not a ViT (it has no PositionEmbedding layer); resize_vit "
            "needs a model built by build_vit or build_hybrid_vit."
        )
    layer = next(layer for layer in model.layers if isinstance(layer, PositionEmbedding))
    batch, height, width, channels = model.input_shape
    patch = _pixels_per_token(model, layer)
    dynamic = any_size(image_size) or (image_size is None and layer.dynamic_size)
    # The grid the embeddings are stored for covers these pixels.
    if layer.dynamic_size:
        stored = (layer.grid_size[0] * patch, layer.grid_size[1] * patch)
    else:
        stored = (height, width)
    size = stored if dynamic or image_size is None else image_size_pair(image_size)
    config = model.get_config()
    if patch_size is not None and patch_size != patch:
        if getattr(model.get_layer("patch_embedding"), "lora_enabled", False):
            raise ValueError(
                f"patch_size={patch_size!r}: the patch embedding of model={model.name!r} has "
                "LoRA factors, which are shaped for its patch size; merge them first "
                "(kr.merge_lora(model)), then resize, then enable_lora again."
            )
        embedding = layer_config(config, "patch_embedding")
        if tuple(embedding["kernel_size"]) != (patch, patch):
            raise ValueError(
                f"patch_size={patch_size!r}: model={model.name!r} is a hybrid ViT, whose tokens "
                "are cells of the ResNet's feature map; resize_vit changes the patch size of a "
                "plain ViT (build_vit)."
            )
        embedding["kernel_size"] = embedding["strides"] = (patch_size, patch_size)
        patch = patch_size
    if size[0] % patch or size[1] % patch:
        what = "the embeddings' grid of " if dynamic else "image_size="
        raise ValueError(
            f"{what}{size[0] if size[0] == size[1] else size} is not divisible by the "
            f"patch size {patch}; pass image_size and patch_size that divide."
        )
    (images,) = (e["config"] for e in config["layers"] if e["class_name"] == "InputLayer")
    images["batch_shape"] = [batch, *((None, None) if dynamic else size), channels]
    layer_config(config, layer.name)["grid_size"] = (size[0] // patch, size[1] // patch)
    _follow_the_grid(config, layer.name, dynamic)
    resized = rebuild_model(model, config, _resampled_weights)
    set_class_names(resized, model_class_names(model))  # the same classes
    return resized


def _bilinear_matrix(old: int, new: int) -> np.ndarray:
    """(new, old): 1-D bilinear resampling with half-pixel centers and no antialiasing, the
    resize of `keras.ops.image.resize` / `jax.image.resize` / `tf.image.resize` when growing."""
    matrix = np.zeros((new, old))
    for i in range(new):
        source = min(max((i + 0.5) * old / new - 0.5, 0.0), old - 1.0)
        low = int(np.floor(source))
        high = min(low + 1, old - 1)
        matrix[i, low] += 1.0 - (source - low)
        matrix[i, high] += source - low
    return matrix


def pi_resize_kernel(kernel, new_size) -> np.ndarray:
    """A patch-embedding kernel PI-resized to another patch size (FlexiViT, Beyer et al. 2023).

    With B the bilinear resize of a patch to the new size, the new kernel is pinv(B^T) applied
    to the old one: for a larger patch, `<resize(x), new> = <x, old>` for every patch `x`
    (the token is unchanged); for a smaller one, the least-squares closest kernel.

    Args:
        kernel: array (p, p, channels, dim) (a Conv2D kernel).
        new_size: the new patch size (int or (height, width)).

    Returns:
        A float32 NumPy array (q, q, channels, dim).

    Example:
    >>> from keras_resvit.models.vit_resize import pi_resize_kernel
    >>> import numpy as np
    >>> pi_resize_kernel(np.ones((16, 16, 3, 8)), 8).shape
    (8, 8, 3, 8)
    """
    kernel = np.asarray(kernel, "float64")
    if kernel.ndim != 4:
        raise ValueError(
            f"kernel of shape {kernel.shape} is not valid; expected a Conv2D kernel (patch "
            "height, patch width, channels, dim)."
        )
    (old_h, old_w), (new_h, new_w) = kernel.shape[:2], image_size_pair(new_size, "new_size")
    resize = np.kron(_bilinear_matrix(old_h, new_h), _bilinear_matrix(old_w, new_w))
    flat = kernel.reshape(old_h * old_w, -1)
    resized = np.linalg.pinv(resize.T) @ flat
    return resized.reshape(new_h, new_w, *kernel.shape[2:]).astype("float32")
