"""Training samples: resize to network size, random crop, horizontal flip and colour jitter, intrinsics kept in step.

The resize and normalisation are the estimator's, for the architecture's :class:`depth_ros.models.Preprocessing`
(:func:`depth_ros.models.network_size`: keep the aspect ratio, short side to the input size, sides multiples of
``preprocessing.multiple``, bicubic colour), so the network sees the scale it will see at inference; depth is
resized with nearest neighbour so no invalid (NaN) pixel bleeds into valid ones, as in the Depth Anything V2
``Resize(resize_target=True)`` transform. The crop is a square of the input size (the reference ``Crop``).

Randomness is a pure function of (seed, epoch, sample index), so a resumed run sees exactly the same samples, in the
same order, as an uninterrupted one, whatever the number of DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from depth_ros.data.frames import RGBDSequence
from depth_ros.estimator import resize_to_network
from depth_ros.frame import Frame
from depth_ros.geometry.camera import PinholeCamera
from depth_ros.models import ARCHITECTURES, DEFAULT_ARCHITECTURE, Preprocessing


@dataclass(frozen=True)
class Augmentation:
    """Random training augmentation; jitter strengths as in torchvision's ``ColorJitter``.

    Attributes:
        hflip: mirror left-right with probability 0.5 (the only augmentation of the Depth Anything V2 paper).
        brightness: factor drawn from [1 - b, 1 + b].
        contrast: factor drawn from [1 - c, 1 + c], blending with the mean grey level.
        saturation: factor drawn from [1 - s, 1 + s], blending with the grey image.
        hue: shift drawn from [-h, h] of a full hue turn (h <= 0.5).
    """

    hflip: bool = True
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.05

    def __post_init__(self):
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"augmentation.{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"augmentation.hue must be in [0, 0.5], got {self.hue}")


def color_jitter(rgb: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
    """Brightness, contrast, saturation and hue jitter of an (H, W, 3) float32 RGB image in [0, 1] (same shape)."""

    def factor(strength: float) -> float:
        return float(rng.uniform(1 - strength, 1 + strength))

    out = rgb * factor(aug.brightness)
    gray = cv2.cvtColor(np.clip(out, 0, 1), cv2.COLOR_RGB2GRAY)
    out = (out - gray.mean()) * factor(aug.contrast) + gray.mean()
    gray = cv2.cvtColor(np.clip(out, 0, 1), cv2.COLOR_RGB2GRAY)[..., None]
    out = np.clip((out - gray) * factor(aug.saturation) + gray, 0, 1).astype(np.float32)
    if aug.hue > 0:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)  # float input: hue in degrees [0, 360)
        hsv[..., 0] = (hsv[..., 0] + 360.0 * rng.uniform(-aug.hue, aug.hue)) % 360.0
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return np.clip(out, 0, 1)


def resize_frame(frame: Frame, input_size: int,
                 preprocessing: Preprocessing) -> tuple[np.ndarray, np.ndarray, PinholeCamera]:
    """Colour (bicubic, float32 [0, 1]) and depth (nearest, NaN kept) at network size, and the matching camera.

    Raises:
        ValueError: a frame without depth (e.g. a bag read without a depth topic): depth supervision needs it.
    """
    if frame.depth is None:
        raise ValueError(f"{frame.name}: the frame has no depth; supervised training and evaluation need a depth "
                         "source (a bag's depth_topic)")
    rgb = resize_to_network(frame.rgb, input_size, preprocessing)
    height, width = rgb.shape[:2]
    depth = cv2.resize(frame.depth, (width, height), interpolation=cv2.INTER_NEAREST)
    return np.clip(rgb, 0, 1), depth, frame.camera.resized(width, height)


class TrainTransform:
    """Frame (with depth) -> network-ready training sample.

    Args:
        input_size: network input (square crop side), a multiple of ``preprocessing.multiple``.
        augmentation: random flip and colour jitter; None disables both.
        preprocessing: the architecture's input rule and normalisation (``CheckpointMetadata.preprocessing`` or
            ``ARCHITECTURES[name].preprocessing``); default Depth Anything V2 (multiples of 14, ImageNet mean/std).
    """

    def __init__(self, input_size: int, augmentation: Augmentation | None = None,
                 preprocessing: Preprocessing = ARCHITECTURES[DEFAULT_ARCHITECTURE].preprocessing):
        preprocessing.network_size(input_size, input_size, input_size)  # validates the size
        self.input_size = input_size
        self.augmentation = augmentation
        self.preprocessing = preprocessing
        self._mean = np.asarray(preprocessing.mean, dtype=np.float32)
        self._std = np.asarray(preprocessing.std, dtype=np.float32)

    def __call__(self, frame: Frame, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Returns ``image`` (3, S, S) float32 normalised with the preprocessing's mean/std, ``depth`` (S, S) float32
        metres (NaN invalid) and ``intrinsics`` (4,) float32 ``fx, fy, cx, cy`` of that S x S image,
        S = ``input_size``."""
        rgb, depth, camera = resize_frame(frame, self.input_size, self.preprocessing)
        size = self.input_size
        top = int(rng.integers(0, rgb.shape[0] - size + 1))
        left = int(rng.integers(0, rgb.shape[1] - size + 1))
        rgb, depth = rgb[top:top + size, left:left + size], depth[top:top + size, left:left + size]
        camera = camera.cropped(left, top, size, size)
        aug = self.augmentation
        if aug is not None:
            if aug.hflip and rng.random() < 0.5:
                rgb, depth, camera = rgb[:, ::-1], depth[:, ::-1], camera.flipped()
            rgb = color_jitter(np.ascontiguousarray(rgb), rng, aug)
        image = ((rgb - self._mean) / self._std).transpose(2, 0, 1)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "depth": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32)),
            "intrinsics": torch.tensor([camera.fx, camera.fy, camera.cx, camera.cy], dtype=torch.float32),
        }


class TrainingFrames(torch.utils.data.Dataset):
    """Frames of a sequence through a :class:`TrainTransform`, with per-(seed, epoch, index) randomness.

    Items are the transform's dict plus ``frame``: the index into ``source`` (for reports of bad batches).

    Args:
        source: the RGB-D sequence.
        indices: which of its frames to use.
        transform: the sample transform.
        seed: base seed of the augmentation.
    """

    def __init__(self, source: RGBDSequence, indices: Sequence[int], transform: TrainTransform, seed: int):
        self.source, self.indices, self.transform, self.seed = source, list(indices), transform, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        sample = self.transform(self.source[self.indices[i]], rng)
        sample["frame"] = torch.tensor(self.indices[i])
        return sample


class EpochShuffleSampler(torch.utils.data.Sampler[int]):
    """A fresh permutation of ``range(count)`` each epoch, a pure function of ``(seed, epoch)``."""

    def __init__(self, count: int, seed: int):
        self.count, self.seed, self.epoch = count, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.count).tolist())
