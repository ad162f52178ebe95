"""DPT decoder head (dense prediction from ViT tokens), in the Depth Anything V2 variant.

Source: Ranftl et al., "Vision Transformers for Dense Prediction", ICCV 2021; Yang et al., "Depth Anything V2", 2024.
Module names follow the reference implementation (DepthAnything/Depth-Anything-V2, ``dpt.py`` and
``util/blocks.py``) so that the official checkpoints load with ``strict=True``. The configuration used by all
official checkpoints is built in: no batch norm, no class-token readout, no channel expansion. All upsampling is
bilinear with ``align_corners=True``, as in the reference.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from depth_ros.models.dinov2 import PATCH_SIZE

# Width of the last hidden layer of the output convolutions (fixed in the reference for every encoder).
OUTPUT_HIDDEN = 32


def _conv3x3(in_channels: int, out_channels: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=bias)


def _upsample(x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Bilinear, align_corners=True, to ``size`` or, without it, to twice the input size."""
    if size is None:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x)))), 3x3 convolutions keeping the channel count; shapes (B, C, h, w)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = _conv3x3(channels, channels)
        self.conv2 = _conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """RefineNet-style fusion: add the refined skip feature, refine, upsample, mix with a 1x1 convolution.

    ``resConfUnit1`` refines the skip input; the deepest block has no skip input but keeps the (unused) unit
    because the official checkpoints contain its weights.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.out_conv = nn.Conv2d(channels, channels, kernel_size=1)
        self.resConfUnit1 = ResidualConvUnit(channels)
        self.resConfUnit2 = ResidualConvUnit(channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        """Fuse (B, C, h, w) features; output (B, C, *size), or (B, C, 2h, 2w) without ``size``."""
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        return self.out_conv(_upsample(self.resConfUnit2(x), size))


class DPTHead(nn.Module):
    """Turn four token maps of a ViT into a one-channel dense map at the input resolution.

    The four maps are reassembled at 4x, 2x, 1x and 1/2x the patch-grid resolution, projected to ``features``
    channels and fused from coarse to fine; the result (1/8 of a patch, i.e. 8x the grid) is upsampled to the image
    size (14x the grid) and mapped to one channel by ``output_conv2``, which ends with ``final_activation``.

    Args:
        in_dim: token width of the encoder.
        features: channels of the fusion path (64/128/256/384 for vits/vitb/vitl/vitg).
        out_channels: channels of the four reassembled maps.
        final_activation: last module of the output convolutions (``nn.Sigmoid()`` metric, ``nn.ReLU()`` relative).
        uncertainty: add ``scratch.sigma_head`` (a depth_ros addition, not in the reference): a second output branch
            beside ``output_conv2`` that maps the same upsampled features plus the (detached) depth map to one
            log-sigma channel; its keys (``depth_head.scratch.sigma_head.*``) exist only when it is on, so the
            official checkpoints still load strictly without it.
    """

    def __init__(self, in_dim: int, features: int, out_channels: tuple[int, int, int, int],
                 final_activation: nn.Module, uncertainty: bool = False):
        super().__init__()
        self.projects = nn.ModuleList(nn.Conv2d(in_dim, channels, kernel_size=1) for channels in out_channels)
        c1, c2, _, c4 = out_channels
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(c1, c1, kernel_size=4, stride=4),
            nn.ConvTranspose2d(c2, c2, kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(c4, c4, kernel_size=3, stride=2, padding=1),
        ])
        self.scratch = nn.Module()
        for level, channels in enumerate(out_channels, start=1):
            self.scratch.add_module(f"layer{level}_rn", _conv3x3(channels, features, bias=False))
        for level in range(1, 5):
            self.scratch.add_module(f"refinenet{level}", FusionBlock(features))
        self.scratch.output_conv1 = _conv3x3(features, features // 2)
        self.scratch.output_conv2 = nn.Sequential(
            _conv3x3(features // 2, OUTPUT_HIDDEN),
            nn.ReLU(),
            nn.Conv2d(OUTPUT_HIDDEN, 1, kernel_size=1),
            final_activation,
        )
        self.scratch.sigma_head = sigma_branch(features // 2) if uncertainty else None

    def forward(self, tokens: list[torch.Tensor], grid_h: int, grid_w: int,
                with_sigma: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Decode.

        Args:
            tokens: four (B, grid_h*grid_w, in_dim) patch-token maps (row-major), shallow to deep.
            grid_h: patch rows (image height / 14).
            grid_w: patch columns (image width / 14).
            with_sigma: also return the log-sigma map of ``sigma_head`` (which must exist).

        Returns:
            (B, 1, 14*grid_h, 14*grid_w) map after ``final_activation``; with ``with_sigma`` the pair
            (that map, (B, 1, 14*grid_h, 14*grid_w) log sigma).
        """
        scratch = self.scratch
        maps = []
        for level, (t, project, resize) in enumerate(zip(tokens, self.projects, self.resize_layers, strict=True)):
            spatial = t.transpose(1, 2).reshape(t.shape[0], t.shape[2], grid_h, grid_w)
            maps.append(getattr(scratch, f"layer{level + 1}_rn")(resize(project(spatial))))
        m1, m2, m3, m4 = maps
        path = scratch.refinenet4(m4, size=m3.shape[-2:])
        path = scratch.refinenet3(path, m3, size=m2.shape[-2:])
        path = scratch.refinenet2(path, m2, size=m1.shape[-2:])
        path = scratch.refinenet1(path, m1)
        out = _upsample(scratch.output_conv1(path), (grid_h * PATCH_SIZE, grid_w * PATCH_SIZE))
        depth = scratch.output_conv2(out)
        if not with_sigma:
            return depth
        return depth, scratch.sigma_head(torch.cat([out, depth.detach()], 1))


# Initial sigma of a new sigma head, in the network's output units (metres before the published-depth factor).
INITIAL_SIGMA = 0.1


def sigma_branch(in_channels: int, hidden: int = OUTPUT_HIDDEN) -> nn.Sequential:
    """A log-sigma output branch: (B, in_channels + 1, H, W) features and depth -> (B, 1, H, W) log sigma.

    3x3 convolution to ``hidden`` channels, ReLU, 1x1 convolution to one channel; the last convolution
    starts at zero weights and bias ``log(INITIAL_SIGMA)``, so a new head predicts 0.1 m everywhere. Used by the DPT
    head and PackNet's decoder (depth_ros; the log-variance output of Kendall and Gal, NeurIPS 2017, as a log sigma).
    """
    last = nn.Conv2d(hidden, 1, kernel_size=1)
    nn.init.zeros_(last.weight)
    nn.init.constant_(last.bias, math.log(INITIAL_SIGMA))
    return nn.Sequential(_conv3x3(in_channels + 1, hidden), nn.ReLU(), last)
