"""Image files judged by their bytes before anything decodes them: kind, size, completeness.

A 1 MB PNG can hold a 20000 x 20000 image that decodes to 1.2 GB of pixels (4.8 GB as
float32), so every file is checked against a pixel limit read from its header before it is
decoded; truncated files are found by their missing end marker. `load_images` decodes a list
of files, checked so, into one array.
"""

from pathlib import Path

import numpy as np

from keras_resvit.base.lazy import tf
from keras_resvit.data.transforms import check_crop_ratio, evaluation_crop_ratio
from keras_resvit.layers.crops import ResizeCenterCrop

# Pillow's default decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`, 1 GiB / 4 / 3):
# about 9459 x 9459 pixels, 256 MiB decoded as 8-bit RGB. Assign a larger value here to
# read larger images.
MAX_IMAGE_PIXELS = 89_478_485
# File signatures: JPEG starts FF D8 FF, PNG with its 8-byte magic number, GIF "GIF8", BMP "BM".
SIGNATURES = {
    "jpeg": b"\xff\xd8\xff",
    "png": b"\x89PNG\r\n\x1a\n",
    "gif": b"GIF8",
    "bmp": b"BM",
}
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they hold the size.
_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# JPEG markers without a length field: TEM and the restart markers RST0-RST7.
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}


def image_kind(head: bytes):
    """ "jpeg", "png", "gif" or "bmp" from a file's first 8 bytes, or None."""
    return next((kind for kind, sig in SIGNATURES.items() if head.startswith(sig)), None)


def _jpeg_size(f):
    f.seek(2)
    while True:
        marker = f.read(2)
        while len(marker) == 2 and marker[0] == 0xFF and marker[1] == 0xFF:  # fill bytes
            marker = marker[1:] + f.read(1)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        if marker[1] in _JPEG_STANDALONE:
            continue
        length = int.from_bytes(f.read(2), "big")
        if marker[1] in _JPEG_FRAMES:
            frame = f.read(5)  # precision, height, width
            if len(frame) < 5:
                return None
            return int.from_bytes(frame[3:5], "big"), int.from_bytes(frame[1:3], "big")
        if marker[1] == 0xDA or length < 2:  # image data before any frame header: corrupt
            return None
        f.seek(length - 2, 1)


def image_dimensions(path):
    """(width, height) of a JPEG, PNG, GIF or BMP file read from its header, or None when the
    header does not say (not such an image, or corrupt)."""
    with open(path, "rb") as f:
        head = f.read(30)
        kind = image_kind(head)
        if kind == "jpeg":
            return _jpeg_size(f)
        if kind == "png" and len(head) >= 24 and head[12:16] == b"IHDR":  # its first chunk
            return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        if kind == "gif" and len(head) >= 10:
            return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
        if kind == "bmp" and len(head) >= 26:
            width = int.from_bytes(head[18:22], "little", signed=True)
            height = int.from_bytes(head[22:26], "little", signed=True)
            return abs(width), abs(height)  # a negative height means top-down rows
    return None


def misread_bmp(path):
    """Why TensorFlow's BMP decoder would give wrong pixels for `path`, or None (a BMP file of
    24 or 32 bits a pixel, or of 8 with the grey ramp for palette, or not a BMP file).

    TensorFlow reads an 8-bit palette BMP's palette indices as grey levels (right only when the
    palette is the grey ramp, as in Pillow's grey images) and refuses 1-, 4- and 16-bit files
    with a message that names no file.
    """
    with open(path, "rb") as f:
        head = f.read(54)
        if image_kind(head) != "bmp":
            return None
        header = int.from_bytes(head[14:18], "little")
        bits = int.from_bytes(head[28:30], "little") if header >= 40 else 0
        if bits in (24, 32):
            return None
        if bits == 8 and int.from_bytes(head[30:34], "little") == 0:  # uncompressed
            used = int.from_bytes(head[46:50], "little") or 256
            f.seek(14 + header)  # the palette: (blue, green, red, 0) per colour
            palette = np.frombuffer(f.read(4 * used), "uint8")
            if len(palette) == 4 * used <= 1024:
                colours = palette.reshape(used, 4)[:, 2::-1]
                if np.array_equal(colours, np.repeat(np.arange(used)[:, None], 3, axis=1)):
                    return None
    return (
        f"a {bits or 'non-24'}-bit BMP, whose colours TensorFlow's BMP decoder does not read "
        "(save it as PNG, or as a 24-bit BMP)"
    )


def _over_limit(size):
    width, height = size
    if width * height <= MAX_IMAGE_PIXELS:
        return None
    return (
        f"{width}x{height} pixels, over the limit of {MAX_IMAGE_PIXELS:,} "
        "(keras_resvit.data.image_files.MAX_IMAGE_PIXELS)"
    )


def oversized(path):
    """ "WxH pixels, over the limit ..." when the header of `path` declares more pixels than
    `MAX_IMAGE_PIXELS`, else None."""
    size = image_dimensions(path)
    return _over_limit(size) if size else None


def _truncated(path, kind) -> bool:
    """Whether a JPEG lacks its end-of-image marker after the image data, a PNG its IEND
    chunk, a GIF its trailer byte, or a BMP the bytes its header declares: what a cut-off
    download or copy leaves. Reads the whole file."""
    data = Path(path).read_bytes()
    if kind == "jpeg":
        scan = data.find(b"\xff\xda")
        return scan < 0 or data.find(b"\xff\xd9", scan) < 0
    if kind == "png":
        return data.rfind(b"IEND") < 0
    if kind == "gif":
        return not data.rstrip(b"\x00").endswith(b"\x3b")
    if kind == "bmp":
        return len(data) < int.from_bytes(data[2:6], "little")
    return False


def image_problem(path, kinds=("jpeg", "png", "gif", "bmp"), complete: bool = False):
    """Why `path` cannot be used as an image, or None.

    Args:
        path: the file.
        kinds: the image kinds accepted.
        complete: also read the whole file to find truncation.

    Returns:
        None, or a short reason: "not a JPEG, PNG, GIF or BMP image", "20000x20000 pixels,
        over the limit of ...", "a 4-bit BMP, whose colours ...", "truncated".
    """
    with open(path, "rb") as f:
        kind = image_kind(f.read(8))
    if kind not in kinds:
        names = [k.upper() for k in kinds]
        return f"not a {' or '.join(filter(None, [', '.join(names[:-1]), names[-1]]))} image"
    size = image_dimensions(path)
    if size is None:
        return f"a corrupt {kind.upper()} header"
    problem = _over_limit(size) or misread_bmp(path)
    if problem is None and complete and _truncated(path, kind):
        return "truncated"
    return problem


def _as_evaluated(image, size, crop_ratio=None):
    """Decoded pixels as `kr.data.load_dataset` evaluates an image of their size at `size`
    (h, w): the shorter side resized (antialiased) to the output's / the crop ratio, then the
    center crop; ratio `crop_ratio`, or where None 0.875 for photos, 1.0 (whole) for images
    about the output's size or smaller (`transforms.evaluation_crop_ratio`); an image of the
    output's size at ratio 1.0 as it is."""
    height, width = size
    ratio = crop_ratio or evaluation_crop_ratio(min(image.shape[:2]), max(height, width))
    if tuple(image.shape[:2]) == (height, width) and ratio == 1.0:
        return tf.cast(image, "float32").numpy()
    crop = ResizeCenterCrop(height, width, crop_ratio=ratio, dtype="float32")
    # Inside tf.data, as the evaluation pipelines run it: TensorFlow's resize on any backend.
    return next(iter(tf.data.Dataset.from_tensors(image).map(crop))).numpy()


def load_images(paths, size, channels: int = 3, crop_ratio: float | None = None) -> np.ndarray:
    """Decodes image files (PNG, JPEG, BMP, GIF) to float32 0-255 pixels at `size` (h, w),
    with `channels` channels (3: RGB, 1: grey; a model's input decides), each as evaluation
    reads it (`kr.data.load_dataset` on a folder of that image: a photo's shorter side resized
    to 1 / 0.875 of the output, then the center crop; a small image resized whole, keeping
    its aspect, then the center crop). `crop_ratio` (in [0.25, 1]) replaces that choice for
    every image, as `load_dataset(crop_ratio=...)` does: 1.0 resizes each whole, as the
    evaluation transform of a whole-image preset (resnet_cifar) does. A None in `size` (a
    model of any input size) keeps each image's own height or width there (the other one
    resized): the images must then agree on it, being one batch.

    Each file's size is read from its header first: an image over
    `image_files.MAX_IMAGE_PIXELS` is refused before it is decoded.

    Raises:
        FileNotFoundError: a path is not a file.
        ValueError: a file is not a decodable image, or too large, or a bad `crop_ratio`.
    """
    if crop_ratio is not None:
        check_crop_ratio(crop_ratio)
    images = []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"image {str(path)!r} is not a file.")
        too_large = oversized(path)
        if too_large:
            raise ValueError(f"image {str(path)!r} has {too_large}; it is not decoded.")
        misread = misread_bmp(path)
        if misread:
            raise ValueError(f"image {str(path)!r} is {misread}.")
        try:
            image = tf.io.decode_image(
                tf.io.read_file(str(path)), channels=channels, expand_animations=False
            )
        except tf.errors.InvalidArgumentError as error:
            # TensorFlow wraps its message in the op that raised it: keep the reason.
            reason = error.message.split("}}")[-1].split(" [Op:")[0].strip()
            raise ValueError(f"image {str(path)!r} cannot be decoded: {reason}") from None
        if None not in size:
            images.append(_as_evaluated(image, tuple(size), crop_ratio))
            continue
        own = tuple(image.shape[:2])
        wanted = tuple(own[i] if size[i] is None else size[i] for i in (0, 1))
        images.append(tf.image.resize(image, wanted).numpy())
    sizes = {str(path): image.shape[:2] for path, image in zip(paths, images, strict=True)}
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"{path!r}: {h}x{w}" for path, (h, w) in sizes.items())
        raise ValueError(
            f"images of different sizes ({shown}) cannot be one batch for a model of input "
            f"size {tuple(size)} (None: any); give images of one size, or one at a time."
        )
    return np.stack(images)
