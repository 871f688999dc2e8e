"""Image files and arrays -> the model's input: (N, C, H, W) float32, normalized as in training.

What a PNG/JPEG or .npy file becomes, `--invert` and the pixel limit: docs/using-models.md
(Predict) and docs/faults-and-security.md (Never unpickle).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from experiments.errors import ConfigError

INVERT_CHOICES = ("auto", "yes", "no")
#: The largest image decoded; a larger header is refused before any pixel is read (why:
#: docs/faults-and-security.md)
MAX_SIDE = 4096
MAX_PIXELS = MAX_SIDE * MAX_SIDE


def read_image(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """A PNG/JPEG file as (C, H, W) float pixels in [0, 1] of the model's shape."""
    from PIL import Image, UnidentifiedImageError

    channels, height, width = shape
    try:
        with warnings.catch_warnings():
            # PIL warns above 89M pixels as it opens; such an image is refused here anyway
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)  # reads the header only: nothing is decoded yet
        with image:
            width_px, height_px = image.size
            if width_px * height_px > MAX_PIXELS:
                raise ConfigError(f"{path}: {too_large(f'{width_px}x{height_px} pixels')}")
            image = image.convert("L" if channels == 1 else "RGB")
            image = image.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32) / 255.0
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file") from exc
    except Image.DecompressionBombError as exc:  # PIL's own guard, above 2 x its limit
        raise ConfigError(f"{path}: {too_large(exc)}") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise ConfigError(
            f"{path}: not an image that can be read (PNG or JPEG expected, or a .npy array)"
        ) from exc
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def too_large(detail: object) -> str:
    return (
        f"the image is too large to read ({detail}); at most {MAX_PIXELS:,} pixels "
        f"({MAX_SIDE}x{MAX_SIDE}) are decoded: the model sees 28x28 or 32x32, so scale it down"
    )


def read_array(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """A .npy file (no pickle) as (N, C, H, W) float pixels in [0, 1]."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file") from exc
    except ValueError as exc:  # an object array (it would need pickle) or not a .npy file
        raise ConfigError(f"{path}: not a plain numeric .npy array ({exc})") from exc
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ConfigError(f"{path}: holds {array.dtype} values, not pixels")
    pixels = array.astype(np.float32) / (255.0 if array.dtype == np.uint8 else 1.0)
    return as_batch(pixels, shape, str(path))


def as_batch(pixels: np.ndarray, shape: tuple[int, int, int], name: str) -> np.ndarray:
    """(N, C, H, W) from one image (H, W), (H, W, C), (C, H, W) or a batch (N, H, W),
    (N, H, W, C), (N, C, H, W); ConfigError if none fits."""
    c, h, w = shape
    s = pixels.shape
    if s == (h, w) and c == 1:
        return pixels[None, None]
    if s == (c, h, w):
        return pixels[None]
    if s == (h, w, c):
        return pixels.transpose(2, 0, 1)[None]
    if pixels.ndim == 3 and s[1:] == (h, w) and c == 1:
        return pixels[:, None]
    if pixels.ndim == 4 and s[1:] == (c, h, w):
        return pixels
    if pixels.ndim == 4 and s[1:] == (h, w, c):
        return pixels.transpose(0, 3, 1, 2)
    raise ConfigError(
        f"{name}: an array of shape {s} cannot be read as {c}x{h}x{w} images; give "
        f"({h}, {w}){'' if c == 1 else f', ({h}, {w}, {c})'}, ({c}, {h}, {w}) or a batch "
        f"(N, {c}, {h}, {w})"
    )


def light_background(image: np.ndarray) -> bool:
    """Whether a (C, H, W) image's one-pixel border is mostly light (mean above 0.5)."""
    border = np.concatenate([image[:, [0, -1], :].ravel(), image[:, :, [0, -1]].ravel()])
    return float(border.mean()) > 0.5


def load_inputs(
    paths: list[str], shape: tuple[int, int, int], invert: str
) -> tuple[list[str], torch.Tensor]:
    """(one label per image, (N, C, H, W) float32 pixels in [0, 1]) for the files in `paths`;
    the datamodule's `normalize_pixels` makes them the model's input."""
    labels, images = [], []
    for name in paths:
        path = Path(name)
        batch = read_array(path, shape) if path.suffix == ".npy" else read_image(path, shape)[None]
        for i, image in enumerate(batch):
            label = name if len(batch) == 1 else f"{name}[{i}]"
            # Fashion-MNIST garments are light on black: a drawing on white paper is inverted
            flip = invert == "yes" or (
                invert == "auto" and shape[0] == 1 and light_background(image)
            )
            if flip:
                image = 1.0 - image
                label += " (inverted)"
            labels.append(label)
            images.append(image)
    return labels, torch.from_numpy(np.stack(images)).float()
