"""One table of the depth architectures: how to build each one and what input it expects.

``ARCHITECTURES`` maps an architecture name (the ``architecture`` field of
:class:`depth_ros.checkpoints.CheckpointMetadata`) to an :class:`Architecture`: its size variants (the metadata's
``encoder`` field), its heads, a constructor and its :class:`Preprocessing` (input size rule and normalisation).
Everything that builds a network or prepares its input (``checkpoints.build_model``, ``DepthEstimator``, the training
transform) goes through this table, so adding an architecture means adding one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from depth_ros.models import packnet
from depth_ros.models.depth_anything_v2 import ENCODERS, HEADS, DepthAnythingV2
from depth_ros.models.dinov2 import PATCH_SIZE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_ARCHITECTURE = "depth_anything_v2"


def network_size(height: int, width: int, input_size: int, multiple: int = PATCH_SIZE) -> tuple[int, int]:
    """Network input size for an image, as the reference ``Resize`` (keep aspect ratio, ``lower_bound``).

    Both sides are scaled by the same factor so that the shorter one reaches ``input_size``, then each is rounded to
    the nearest multiple of ``multiple`` (half to even, as numpy), rounding up instead when that would fall below
    ``input_size``. Source: Depth-Anything-V2 ``depth_anything_v2/util/transform.py`` (there ``multiple`` = 14).

    Args:
        height: image height in pixels.
        width: image width in pixels.
        input_size: lower bound for both network sides, a multiple of ``multiple``.
        multiple: both network sides are multiples of it (14: ViT patch; 32: PackNet stride).

    Returns:
        ``(net_height, net_width)`` in pixels, both multiples of ``multiple`` and >= ``input_size``.

    Raises:
        ValueError: for an image smaller than ``multiple`` px on a side or an input size that is not a positive
            multiple of ``multiple``.
    """
    if input_size <= 0 or input_size % multiple:
        raise ValueError(f"input_size must be a positive multiple of {multiple}, got {input_size}")
    if min(height, width) < multiple:
        raise ValueError(f"image of {width}x{height} px is too small: both sides must be >= {multiple} px")
    scale = max(input_size / height, input_size / width)

    def to_multiple(x: float) -> int:
        y = int(round(x / multiple) * multiple)  # Python round is half-to-even, like np.round
        if y < input_size:
            y = int(-(-x // multiple) * multiple)
        return y

    return to_multiple(scale * height), to_multiple(scale * width)


@dataclass(frozen=True)
class Preprocessing:
    """What an architecture expects as input: RGB in [0, 1] resized by :func:`network_size`, then normalised.

    Attributes:
        multiple: network height and width are multiples of this many pixels.
        input_size: default short side in pixels (used when a checkpoint does not record one).
        mean: per-channel RGB mean subtracted from the [0, 1] image.
        std: per-channel RGB standard deviation the result is divided by.
    """

    multiple: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def network_size(self, height: int, width: int, input_size: int) -> tuple[int, int]:
        """``(net_height, net_width)`` for an image of ``height`` x ``width`` px; see :func:`network_size`."""
        return network_size(height, width, input_size, self.multiple)


class ModelSpec(Protocol):
    """What :func:`create_model` reads (:class:`depth_ros.checkpoints.CheckpointMetadata` has it)."""

    architecture: str
    encoder: str
    head: str
    max_depth: float
    uncertainty: bool


@dataclass(frozen=True)
class Architecture:
    """One depth architecture.

    Attributes:
        variants: allowed values of the metadata's ``encoder`` field (size variants).
        heads: allowed output heads (``metric``: metres; ``relative``: affine-invariant inverse depth).
        build: ``build(variant, head, max_depth, uncertainty) -> nn.Module`` with random weights; the module maps
            (B, 3, H, W) preprocessed images to (B, H, W) in eval mode, and with ``uncertainty`` has a ``sigma_head``
            and accepts ``forward(x, with_sigma=True)`` -> (depth, (B, H, W) log sigma in metres).
        preprocessing: input size rule and normalisation.
    """

    variants: tuple[str, ...]
    heads: tuple[str, ...]
    build: Callable[[str, str, float, bool], nn.Module]
    preprocessing: Preprocessing


ARCHITECTURES: dict[str, Architecture] = {
    # Yang et al. 2024: DINOv2 ViT + DPT; sides multiples of the 14 px patch, 518 px training size, ImageNet stats.
    DEFAULT_ARCHITECTURE: Architecture(
        ENCODERS, HEADS, DepthAnythingV2, Preprocessing(PATCH_SIZE, 518, IMAGENET_MEAN, IMAGENET_STD)),
    # Guizilini et al. 2020: sides multiples of the total stride 32; 192 px (PackNet's KITTI height; 192x256 for a
    # 4:3 camera); RGB in [0, 1] unnormalised as packnet-sfm feeds it. Metric head only.
    "packnet": Architecture(
        packnet.VARIANTS, ("metric",),
        lambda variant, head, max_depth, uncertainty: packnet.PackNet(variant, max_depth, uncertainty),
        Preprocessing(packnet.STRIDE, 192, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))),
}


def get_architecture(name: str, encoder: str | None = None, head: str | None = None) -> Architecture:
    """The :class:`Architecture` called ``name``, checking that it has the given variant and head (if given).

    Raises:
        ValueError: an unknown name, variant or head (the message lists the known ones).
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; expected one of {', '.join(ARCHITECTURES)}")
    architecture = ARCHITECTURES[name]
    if encoder is not None and encoder not in architecture.variants:
        raise ValueError(f"unknown encoder {encoder!r} for {name}; expected one of {', '.join(architecture.variants)}")
    if head is not None and head not in architecture.heads:
        raise ValueError(f"unknown head {head!r} for {name}; expected one of {', '.join(architecture.heads)}")
    return architecture


def create_model(spec: ModelSpec) -> nn.Module:
    """A randomly initialised network for ``spec`` (e.g. a ``CheckpointMetadata``), in training mode, with a sigma
    head when ``spec.uncertainty``.

    Raises:
        ValueError: unknown architecture, variant or head, a bad max_depth, or uncertainty with a relative head.
    """
    return get_architecture(spec.architecture, spec.encoder, spec.head).build(
        spec.encoder, spec.head, spec.max_depth, spec.uncertainty)


def depth_scales(output: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    """A registry model's training-mode output as a list of (B, 1, h_s, w_s) depth maps, full resolution first.

    PackNet returns its four scales (full, 1/2, 1/4, 1/8) in training mode; Depth Anything V2 returns one (B, H, W)
    map in every mode, which becomes a one-element list. Multi-scale losses iterate over the result either way.
    """
    return list(output) if isinstance(output, list | tuple) else [output.unsqueeze(1)]
