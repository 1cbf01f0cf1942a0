"""What every plot shares: input checks, a grid of image panels, overlays and atomic PNG writes.

Figures are `matplotlib.figure.Figure`s rendered by the Agg canvas directly, never through
pyplot, so plotting leaves the user's matplotlib backend and open figures alone.
"""

import math
from pathlib import Path

import numpy as np

from keras_resvit.base.class_names import checked_class_names
from keras_resvit.base.files import as_path, atomic_path, check_output_path
from keras_resvit.base.validation import check_model
from keras_resvit.data.checks import check_pixels

DPI = 100
PANEL_INCHES = 2.0  # one image panel is PANEL_INCHES * DPI pixels square
LINE_INCHES = 0.2  # one line of title text above a panel
PAD_INCHES = 0.05  # blank margin around each image
MAX_COLUMNS = 8
SOFTWARE = "keras_resvit"  # the "Software" text of every figure's PNG
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png_path(path) -> Path:
    """`path` as a Path ("~" expanded), or ValueError unless it names a writable `.png` file
    that is new, empty or a figure of this package (`save_png` marks its PNGs): a user's
    image (a plot's own input, say) is never replaced."""
    path = as_path("path", path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"path={str(path)!r} must be a .png file.")
    path = check_output_path("path", path)
    if path.is_file() and path.stat().st_size and png_text(path).get("Software") != SOFTWARE:
        raise ValueError(
            f"path={str(path)!r} exists and is not a figure keras_resvit wrote; it is not "
            "replaced: pass another path, or move that file away."
        )
    return path


def png_text(path, limit: int = 1 << 16) -> dict:
    """The text chunks (`tEXt`: keyword -> text) of the PNG at `path` that come before its
    pixels, read from its first `limit` bytes; {} for a file that is not a PNG."""
    with open(path, "rb") as f:
        data = f.read(limit)
    if not data.startswith(PNG_SIGNATURE):
        return {}
    text, at = {}, len(PNG_SIGNATURE)
    while at + 8 <= len(data):
        length, kind = int.from_bytes(data[at : at + 4], "big"), data[at + 4 : at + 8]
        if kind in (b"IDAT", b"IEND"):
            break
        if kind == b"tEXt":
            keyword, _, value = data[at + 8 : at + 8 + length].partition(b"\0")
            text[keyword.decode("latin-1")] = value.decode("latin-1")
        at += 12 + length
    return text


def check_plot_model(model) -> None:
    """ValueError unless `model` is a `keras.Model` with a defined input shape, which every
    plot reads (an unbuilt Sequential or a subclassed model has none)."""
    check_model("model", model)
    if not hasattr(model, "input_shape"):
        raise ValueError(
            f"model={model.name!r} has no defined input shape (an unbuilt Sequential or a "
            "subclassed model); pass a functional model (e.g. kr.create_model(name)) or a "
            "Sequential that starts with a keras.Input."
        )


def check_class_names(class_names, classes) -> list | None:
    """`class_names` as a list of str (None passes), or ValueError unless it is a sequence of
    strings with one name for each of `classes` (any number when `classes` is None: a model
    without class scores)."""
    return None if class_names is None else checked_class_names(class_names, classes=classes)


def check_images(model, images) -> np.ndarray:
    """`images` as float32 (N, H, W, C), or ValueError naming its shape and the model's input,
    or NaN or infinite pixels (which would plot as blank maps)."""
    try:
        array = np.asarray(images, dtype="float32")
    except (TypeError, ValueError):
        raise ValueError(
            f"images of type {type(images).__name__} is not an array of pixels; expected a "
            "float (N, H, W, C) batch of raw 0-255 pixels."
        ) from None
    expected = tuple(model.input_shape[1:])
    fits = array.ndim == 4 and len(array) > 0
    if fits:
        fits = all(e is None or e == a for e, a in zip(expected, array.shape[1:], strict=True))
    if not fits:
        wanted = ", ".join("any" if e is None else str(e) for e in expected)
        raise ValueError(
            f"images has shape {array.shape}; model {model.name!r} needs a batch (N, {wanted}) "
            "of raw 0-255 pixels (for one image pass images[None])."
        )
    check_pixels("images", array)
    return array


def label(index, class_names=None) -> str:
    """A class's name from `check_class_names`' list, else its index."""
    return class_names[int(index)] if class_names else str(int(index))


def image_grid(count, title_lines=1):
    """A figure with `count` image panels, up to MAX_COLUMNS per row, each with room for
    `title_lines` lines of text above it; returns (figure, list of axes).

    The figure is (columns * PANEL_INCHES) by (rows * (PANEL_INCHES + title_lines *
    LINE_INCHES)) inches at DPI, placed by hand so that the size never depends on the text.
    """
    from matplotlib.figure import Figure

    columns = min(count, MAX_COLUMNS)
    rows = math.ceil(count / columns)
    cell = PANEL_INCHES + title_lines * LINE_INCHES
    width, height = columns * PANEL_INCHES, rows * cell
    figure = Figure(figsize=(width, height), dpi=DPI)
    side = PANEL_INCHES - 2 * PAD_INCHES
    axes = []
    for i in range(count):
        row, column = divmod(i, columns)
        left = column * PANEL_INCHES + PAD_INCHES
        bottom = (rows - 1 - row) * cell + PAD_INCHES
        ax = figure.add_axes((left / width, bottom / height, side / width, side / height))
        ax.axis("off")
        axes.append(ax)
    return figure, axes


def show_image(ax, image, heatmap=None, title=None):
    """Draws raw 0-255 pixels, optionally a [0, 1] heatmap of any resolution stretched over
    them (semi-transparent), and a title."""
    pixels = np.clip(image, 0, 255).astype("uint8")
    ax.imshow(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, cmap="gray")
    if heatmap is not None:
        height, width = pixels.shape[:2]
        ax.imshow(
            heatmap,
            cmap="jet",
            alpha=0.45,
            vmin=0.0,
            vmax=1.0,
            interpolation="bilinear",
            extent=(-0.5, width - 0.5, height - 0.5, -0.5),
        )
    if title:
        ax.set_title(title, fontsize=8, pad=2)


def save_png(figure, path) -> Path:
    """Renders `figure` with the Agg canvas into `path` atomically, marked as this package's
    (`SOFTWARE`); returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI, metadata={"Software": SOFTWARE})
    return Path(path)
