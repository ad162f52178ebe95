"""PackNet: a small convolutional encoder-decoder for monocular depth that downsamples by packing, not by striding.

Source: Guizilini et al., "3D Packing for Self-Supervised Monocular Depth Estimation", CVPR 2020
(arxiv.org/abs/1905.02693), reference implementation TRI-ML/packnet-sfm (``networks/depth/PackNet01.py``,
``PackNetSlim01.py``, ``networks/layers/packnet/layers01.py``, version "1A": skips joined by concatenation).

Structure, as the reference: a 5x5 stem and a 7x7 convolution at full resolution, then five packing blocks (each
halves the resolution, total stride 32) with residual stages between them; the decoder mirrors it with five
unpacking blocks, each followed by a 3x3 convolution over the unpacked features concatenated with the encoder's
features of that resolution and (for the three finest levels) the next coarser prediction upsampled. Predictions
come out at four scales: full resolution, 1/2, 1/4 and 1/8.

* Packing (:class:`PackingBlock`): space-to-depth by 2 (no information lost), a 3D convolution that treats the packed
  channels as a depth axis and lifts them to ``features_3d`` feature maps, then a 2D convolution back to the input
  width.
* Unpacking (:class:`UnpackingBlock`): a 2D convolution, the same 3D lift, then depth-to-space by 2.

Convolutions are followed by GroupNorm (16 groups; one per channel below 16 channels) and ELU, as in the reference.

Output (a choice of depth_ros; the reference predicts inverse depth ``sigmoid / min_depth``): depth in metres
``sigmoid(x) * max_depth``, the same bounded parameterisation as the Depth Anything V2 metric head, so both
architectures share one checkpoint metadata (``max_depth``), one evaluation range and one focal correction. The
coarser predictions fed back into the decoder are the sigmoid maps, i.e. depth / max_depth in (0, 1).

Input: RGB in [0, 1] (the reference's input; no mean/std normalisation), any height and width: odd sizes are padded
by edge replication before each space-to-depth and cropped back after each depth-to-space. Feeding sides that are
multiples of 32 (what :class:`depth_ros.estimator.DepthEstimator` does) means no padding at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from depth_ros.models.dpt import sigma_branch

STRIDE = 32  # five packing blocks, each halving height and width
GROUPS = 16  # GroupNorm groups (reference); fewer for blocks narrower than 16 channels


@dataclass(frozen=True)
class PackNetConfig:
    """Widths of one PackNet variant.

    Attributes:
        stem: channels of the full-resolution stem (reference ``ni``).
        widths: channels at resolutions 1, 1/2, 1/4, 1/8 and 1/16 (reference ``n1`` ... ``n5``); the packing block
            at resolution 1/2^i keeps ``widths[i]`` channels.
        blocks: residual blocks of the four encoder stages between the packing blocks.
        features_3d: output channels of the 3D convolution of each (un)packing block (reference ``d``).
    """

    stem: int
    widths: tuple[int, int, int, int, int]
    blocks: tuple[int, int, int, int]
    features_3d: int


PACKNET_CONFIGS: dict[str, PackNetConfig] = {
    # PackNetSlim01 of the reference.
    "slim": PackNetConfig(32, (32, 64, 128, 256, 512), (2, 2, 3, 3), 4),
    # depth_ros: a quarter of slim's widths, one residual block per stage, two 3D features; the two full-resolution
    # convolutions (5x5 stem, 7x7 conv1) dominate its cost, hence 8 channels there. Camera rate on two CPU cores.
    "tiny": PackNetConfig(8, (8, 16, 32, 64, 128), (1, 1, 1, 1), 2),
}
VARIANTS: tuple[str, ...] = tuple(PACKNET_CONFIGS)


def space_to_depth(x: torch.Tensor) -> torch.Tensor:
    """Move each 2x2 pixel neighbourhood into channels (``pixel_unshuffle`` by 2), padding odd sides first.

    Args:
        x: (B, C, H, W) tensor.

    Returns:
        (B, 4C, ceil(H/2), ceil(W/2)); odd H or W is padded at the bottom/right by replicating the last row/column.
        Channel ``4c + 2i + j`` holds pixel ``(2y + i, 2x + j)`` of channel ``c``, as ``torch.nn.PixelUnshuffle``.
    """
    pad_h, pad_w = x.shape[-2] % 2, x.shape[-1] % 2
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return F.pixel_unshuffle(x, 2)


def depth_to_space(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`space_to_depth`: ``pixel_shuffle`` by 2, cropped to ``size``.

    Args:
        x: (B, 4C, h, w) tensor.
        size: ``(H, W)`` with ``H`` in {2h - 1, 2h} and ``W`` in {2w - 1, 2w}.

    Returns:
        (B, C, H, W); ``depth_to_space(space_to_depth(x), x.shape[-2:])`` is exactly ``x``.
    """
    return F.pixel_shuffle(x, 2)[..., :size[0], :size[1]]


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(GROUPS, channels), channels)


class ConvBlock(nn.Sequential):
    """Conv2d (stride 1, zero 'same' padding) -> GroupNorm -> ELU: (B, in, H, W) -> (B, out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                         _group_norm(out_channels), nn.ELU(inplace=True))


class ResidualBlock(nn.Module):
    """Two 3x3 :class:`ConvBlock` plus a 1x1 projection shortcut, then GroupNorm and ELU (reference ``ResidualConv``).

    ``forward``: (B, in, H, W) -> (B, out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.convs = nn.Sequential(ConvBlock(in_channels, out_channels, 3), ConvBlock(out_channels, out_channels, 3))
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1)
        self.norm = _group_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(self.norm(self.convs(x) + self.shortcut(x)))


def lift_3d(conv3d: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3x3 ``Conv3d(1, d, padding=1)`` to ``x`` seen as a one-channel volume whose depth axis is C.

    Args:
        conv3d: the 3D convolution (weight (d, 1, 3, 3, 3), bias (d,)).
        x: (B, C, H, W) tensor.

    Returns:
        (B, C*d, H, W), channel ``c*d + k`` = 3D feature k at depth c, i.e.
        ``conv3d(x.unsqueeze(1)).transpose(1, 2).flatten(1, 2)`` (the reference flattens feature-major, ``k*C + c``:
        the same maps in another fixed order). Computed as one depthwise 2D convolution giving each depth slice's
        contribution to its three neighbours, summed over the depth shift: on CPU, torch's conv3d with a single
        input channel takes an unvectorised path that is several times slower. The result is in channels-last
        memory, where that depthwise convolution runs fastest on CPU (oneDNN).
    """
    channels, d = x.shape[1], conv3d.out_channels
    # per input slice c: the 3x3 responses to the d filters at depth offsets -1, 0, +1 -> (B, C, d, 3, H, W)
    weight = conv3d.weight.view(1, d * 3, 3, 3).expand(channels, d * 3, 3, 3).reshape(-1, 1, 3, 3)
    slices = F.conv2d(x.contiguous(memory_format=torch.channels_last), weight, padding=1, groups=channels)
    slices = slices.unflatten(1, (channels, d, 3))
    out = slices[:, :, :, 1] + conv3d.bias.view(1, 1, d, 1, 1)
    out[:, 1:] += slices[:, :-1, :, 0]  # slice c - 1 seen through the filter's first depth tap
    out[:, :-1] += slices[:, 1:, :, 2]  # slice c + 1 through its last tap; zero padding at both ends
    return out.flatten(1, 2)


class PackingBlock(nn.Module):
    """Space-to-depth, 3D convolution over the packed channels, 2D convolution (reference ``PackLayerConv3d``).

    ``forward``: (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)).

    Args:
        channels: C, kept from input to output.
        kernel_size: of the 2D convolution.
        features_3d: output channels d of the 3x3x3 convolution; the 2D convolution sees 4 * C * d channels.
    """

    def __init__(self, channels: int, kernel_size: int, features_3d: int):
        super().__init__()
        self.conv3d = nn.Conv3d(1, features_3d, 3, padding=1)
        self.conv = ConvBlock(4 * channels * features_3d, channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(lift_3d(self.conv3d, space_to_depth(x)))


class UnpackingBlock(nn.Module):
    """2D convolution, 3D convolution, depth-to-space (reference ``UnpackLayerConv3d``).

    ``forward(x, size)``: (B, in, h, w) -> (B, out, H, W), ``size = (H, W)`` at most (2h, 2w).

    Args:
        in_channels, out_channels: as above; ``4 * out_channels`` must be divisible by ``features_3d``.
        kernel_size: of the 2D convolution, which outputs ``4 * out_channels / features_3d`` channels.
        features_3d: output channels d of the 3x3x3 convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, features_3d: int):
        super().__init__()
        if (4 * out_channels) % features_3d:
            raise ValueError(f"4 * out_channels ({4 * out_channels}) must be divisible by features_3d ({features_3d})")
        self.conv = ConvBlock(in_channels, 4 * out_channels // features_3d, kernel_size)
        self.conv3d = nn.Conv3d(1, features_3d, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return depth_to_space(lift_3d(self.conv3d, self.conv(x)), size)


class PackNet(nn.Module):
    """PackNet01 (version 1A) depth network with a metric, bounded output.

    Args:
        variant: a key of :data:`PACKNET_CONFIGS` (``tiny`` or ``slim``).
        max_depth: upper bound of the output in metres; depth is ``sigmoid(x) * max_depth``.
        uncertainty: add ``sigma_head`` (depth_ros, not in the reference): a log-sigma branch
            (:func:`depth_ros.models.dpt.sigma_branch`, 32 hidden channels) at 1/4 resolution, for context: it reads
            the decoder features of the 1/4 and (upsampled) 1/8 levels plus the (detached) 1/4 depth map; its output
            is upsampled bilinearly to full resolution. Its keys (``sigma_head.*``) exist only when on.

    Raises:
        ValueError: unknown variant or max_depth not a positive finite number.

    Module attributes: ``stem``, ``conv1``, ``packs`` (5), ``stages`` (4 residual stages), ``unpacks`` (5, coarsest
    first), ``iconvs`` (5), ``heads`` (4, 1/8 resolution first), ``sigma_head`` (or None).
    """

    def __init__(self, variant: str = "tiny", max_depth: float = 20.0, uncertainty: bool = False):
        super().__init__()
        if variant not in PACKNET_CONFIGS:
            raise ValueError(f"unknown PackNet variant {variant!r}; expected one of {', '.join(VARIANTS)}")
        if not (math.isfinite(max_depth) and max_depth > 0):
            raise ValueError(f"max_depth must be a positive number of metres, got {max_depth!r}")
        config = PACKNET_CONFIGS[variant]
        self.variant = variant
        self.max_depth = float(max_depth)
        self.config = config
        widths, d = config.widths, config.features_3d
        self.stem = ConvBlock(3, config.stem, 5)
        self.conv1 = ConvBlock(config.stem, widths[0], 7)
        self.packs = nn.ModuleList(PackingBlock(w, k, d) for w, k in zip(widths, (5, 3, 3, 3, 3), strict=True))
        self.stages = nn.ModuleList(
            nn.Sequential(ResidualBlock(widths[i], widths[i + 1]),
                          *(ResidualBlock(widths[i + 1], widths[i + 1]) for _ in range(blocks - 1)))
            for i, blocks in enumerate(config.blocks))
        # Decoder level i (resolution 1/2^i, i = 4 .. 0) unpacks to widths[i] and joins the encoder features of that
        # resolution (skip channels: stem for i = 0, else widths[i - 1]) and, for i <= 2, the upsampled prediction.
        skips = (config.stem,) + widths[:4]
        levels = range(4, -1, -1)
        self.unpacks = nn.ModuleList(UnpackingBlock(widths[min(i + 1, 4)], widths[i], 3, d) for i in levels)
        self.iconvs = nn.ModuleList(ConvBlock(widths[i] + skips[i] + (i <= 2), widths[i], 3) for i in levels)
        self.heads = nn.ModuleList(nn.Conv2d(widths[i], 1, 3, padding=1) for i in range(3, -1, -1))
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Conv3d):  # reference initialisation
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        self.sigma_head = sigma_branch(widths[2] + widths[3], hidden=32) if uncertainty else None

    def forward(self, x: torch.Tensor, with_sigma: bool = False):
        """Predict depth (and, with ``with_sigma``, its uncertainty).

        Args:
            x: (B, 3, H, W) float RGB in [0, 1]; any H, W >= 2 (multiples of 32 avoid internal padding).
            with_sigma: also return log sigma (needs ``uncertainty=True``).

        Returns:
            eval mode: (B, H, W) depth in metres in (0, max_depth), like ``DepthAnythingV2.forward``.
            training mode: four (B, 1, h_s, w_s) depth maps in metres, full resolution first, then 1/2, 1/4 and
            1/8 (``h_s = ceil(H / 2^s)``), for multi-scale losses.
            With ``with_sigma``: (that depth output, (B, H, W) log sigma), sigma = exp(log sigma) the standard
            deviation of the full-resolution depth in metres (before
            :func:`depth_ros.published_depth.depth_factor`).

        Raises:
            ValueError: x is not (B, 3, H, W), or ``with_sigma`` for a model without a sigma head.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an image batch of shape (B, 3, H, W), got {tuple(x.shape)}")
        if with_sigma and self.sigma_head is None:
            raise ValueError("this model has no uncertainty (sigma) head")
        skips = [self.stem(x)]
        features = self.conv1(skips[0])
        for i, pack in enumerate(self.packs):
            skips.append(pack(features))
            if i < 4:
                features = self.stages[i](skips[-1])
        features = skips.pop()  # 1/32 resolution
        outputs, decoded = [], {}  # sigmoid maps, coarsest first; decoder features by level
        for level, unpack, iconv in zip(range(4, -1, -1), self.unpacks, self.iconvs, strict=True):
            skip = skips[level]
            joined = [unpack(features, skip.shape[-2:]), skip]
            if outputs:
                joined.append(F.interpolate(outputs[-1], size=skip.shape[-2:], mode="nearest"))
            features = decoded[level] = iconv(torch.cat(joined, 1))
            if level <= 3:
                outputs.append(torch.sigmoid(self.heads[3 - level](features)))
        depths = [out * self.max_depth for out in reversed(outputs)]
        depth = depths if self.training else depths[0][:, 0]
        if not with_sigma:
            return depth
        quarter = decoded[2].shape[-2:]
        context = torch.cat([decoded[2], F.interpolate(decoded[3], size=quarter, mode="bilinear", align_corners=False),
                             outputs[1].detach()], 1)
        log_sigma = F.interpolate(self.sigma_head(context), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return depth, log_sigma[:, 0]
