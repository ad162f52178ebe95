"""The one decoder of encoded images (files, CompressedImage jpeg / png, compressedDepth PNGs): the size is read from
the header and bounded before any pixel is decoded, so a small file that decodes to gigabytes (a decompression bomb)
costs neither time nor memory. Every reader of image files and compressed messages in depth_ros goes through it.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np

MAX_IMAGE_PIXELS = 4096 * 4096  # px, width x height: the default bound of every decoded image


def check_image_size(width: int, height: int, max_pixels: int | None, what: str) -> None:
    """Raise ValueError naming the size when ``width`` x ``height`` is empty or exceeds ``max_pixels`` (None: no
    limit). Used before any pixel is decoded or copied."""
    if height <= 0 or width <= 0:
        raise ValueError(f"{what} has zero size ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ValueError(f"{what} is {width}x{height} = {width * height} px, more than the limit of {max_pixels} px "
                         "(max_image_pixels)")


def decode_image(data, what: str, max_pixels: int = MAX_IMAGE_PIXELS, color: bool = True) -> np.ndarray:
    """Decode an encoded image (PNG, JPEG, any format both Pillow and OpenCV read), its size checked first.

    Args:
        data: the encoded bytes (bytes, array.array or uint8 numpy array).
        what: how errors name the input (e.g. a file name).
        max_pixels: largest width x height accepted, read from the header (Pillow reads only the header).
        color: True: (H, W, 3) uint8 RGB; False: the stored pixels unchanged (e.g. (H, W) uint16 of a depth PNG).

    Raises:
        ValueError: empty data, a header Pillow cannot read, a size over ``max_pixels`` or zero, or data that OpenCV
            cannot decode.
    """
    from PIL import Image as PillowImage

    data = np.frombuffer(data, dtype=np.uint8)
    if data.size == 0:
        raise ValueError(f"{what} has no data")
    try:
        with warnings.catch_warnings():  # its decompression-bomb warning: the limit below decides
            warnings.simplefilter("ignore", PillowImage.DecompressionBombWarning)
            with PillowImage.open(io.BytesIO(data)) as header:
                width, height = header.size
    except Exception as exc:  # Pillow raises several types for unreadable or hostile headers
        raise ValueError(f"cannot decode {what}, {data.size} bytes: its header is unreadable ({exc})") from exc
    check_image_size(width, height, max_pixels, what)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR if color else cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot decode {what}, {data.size} bytes")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if color else image


def read_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS, color: bool = True) -> np.ndarray:
    """An image file decoded by :func:`decode_image` (RGB, or with ``color=False`` its stored pixels).

    Raises:
        OSError: the file cannot be read (FileNotFoundError when missing). ValueError: as :func:`decode_image`.
    """
    return decode_image(Path(path).read_bytes(), str(path), max_pixels, color)
