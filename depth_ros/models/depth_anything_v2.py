"""Depth Anything V2: DINOv2 encoder + DPT head, with a metric or a relative output.

Source: Yang et al., "Depth Anything V2", NeurIPS 2024, and its reference implementation
(DepthAnything/Depth-Anything-V2: ``depth_anything_v2`` for relative, ``metric_depth/depth_anything_v2`` for metric
models). One class serves both heads; they differ only in the last activation, so the state-dict keys are the same
and every official checkpoint (``depth_anything_v2_{enc}.pth``, ``depth_anything_v2_metric_{hypersim,vkitti}_{enc}
.pth``) loads with ``strict=True``.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from depth_ros.models.dinov2 import PATCH_SIZE, DinoVisionTransformer
from depth_ros.models.dpt import DPTHead


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one encoder size, as in the official model configurations.

    Attributes:
        embed_dim: ViT token width.
        depth: number of transformer blocks.
        num_heads: attention heads.
        ffn: feed-forward type, "mlp" or "swiglu" (ViT-g only).
        layers: 0-based indices of the blocks whose outputs feed the DPT head.
        features: channels of the DPT fusion path.
        out_channels: channels of the four reassembled DPT maps.
    """

    embed_dim: int
    depth: int
    num_heads: int
    ffn: str
    layers: tuple[int, int, int, int]
    features: int
    out_channels: tuple[int, int, int, int]


MODEL_CONFIGS: dict[str, ModelConfig] = {
    "vits": ModelConfig(384, 12, 6, "mlp", (2, 5, 8, 11), 64, (48, 96, 192, 384)),
    "vitb": ModelConfig(768, 12, 12, "mlp", (2, 5, 8, 11), 128, (96, 192, 384, 768)),
    "vitl": ModelConfig(1024, 24, 16, "mlp", (4, 11, 17, 23), 256, (256, 512, 1024, 1024)),
    "vitg": ModelConfig(1536, 40, 24, "swiglu", (9, 19, 29, 39), 384, (1536, 1536, 1536, 1536)),
}
ENCODERS: tuple[str, ...] = tuple(MODEL_CONFIGS)
HEADS: tuple[str, ...] = ("metric", "relative")


class DepthAnythingV2(nn.Module):
    """Monocular depth network: DINOv2 ViT encoder (``.pretrained``) + DPT head (``.depth_head``).

    Args:
        encoder: one of ``ENCODERS`` ("vits", "vitb", "vitl", "vitg").
        head: "metric" - depth in metres, ``sigmoid(x) * max_depth`` (Depth Anything V2 metric models, e.g.
            Hypersim indoor with max_depth 20, Virtual KITTI outdoor with max_depth 80); "relative" - affine-invariant
            inverse depth (disparity-like, larger is nearer), ``relu(x)``.
        max_depth: upper bound of the metric output in metres (> 0); ignored by the relative head.
        uncertainty: add a log-sigma output branch to the DPT head (``sigma_head``, metric head only; see
            :class:`~depth_ros.models.dpt.DPTHead`).

    Raises:
        ValueError: unknown encoder or head, max_depth not a positive finite number for the metric head, or
            uncertainty with the relative head.

    Training code: the encoder and head parameters are ``model.pretrained.parameters()`` and
    ``model.depth_head.parameters()`` (the official recipe uses a 10x smaller learning rate for the encoder). The
    module works under ``torch.autocast`` (bf16/fp16), with channels_last inputs and with ``torch.compile``.
    """

    patch_size = PATCH_SIZE

    def __init__(self, encoder: str = "vits", head: str = "metric", max_depth: float = 20.0,
                 uncertainty: bool = False):
        super().__init__()
        if encoder not in MODEL_CONFIGS:
            raise ValueError(f"unknown encoder {encoder!r}; expected one of {', '.join(ENCODERS)}")
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; expected one of {', '.join(HEADS)}")
        if head == "metric" and not (math.isfinite(max_depth) and max_depth > 0):
            raise ValueError(f"max_depth must be a positive number of metres, got {max_depth!r}")
        if uncertainty and head != "metric":
            raise ValueError("an uncertainty (sigma) head needs the metric head")
        config = MODEL_CONFIGS[encoder]
        self.encoder = encoder
        self.head = head
        self.max_depth = float(max_depth)
        self.config = config
        self.pretrained = DinoVisionTransformer(config.embed_dim, config.depth, config.num_heads, config.ffn)
        final_activation = nn.Sigmoid() if head == "metric" else nn.ReLU()
        self.depth_head = DPTHead(config.embed_dim, config.features, config.out_channels, final_activation,
                                  uncertainty)

    @property
    def sigma_head(self) -> nn.Module | None:
        """The log-sigma branch of the DPT head, or None for a model without uncertainty output."""
        return self.depth_head.scratch.sigma_head

    def forward(self, x: torch.Tensor, with_sigma: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Predict depth (and, with ``with_sigma``, its uncertainty).

        Args:
            x: (B, 3, H, W) float RGB, normalised with the ImageNet mean (0.485, 0.456, 0.406) and std
                (0.229, 0.224, 0.225); H and W multiples of 14 (518 is the training size; any multiple works).
            with_sigma: also return log sigma (needs ``uncertainty=True``).

        Returns:
            (B, H, W): metric head - depth in metres in (0, max_depth); relative head - inverse relative depth >= 0.
            With ``with_sigma``: (that depth, (B, H, W) log sigma), sigma = exp(log sigma) the standard deviation
            of the depth in metres in the same units as the depth (before
            :func:`depth_ros.published_depth.depth_factor`).

        Raises:
            ValueError: x is not (B, 3, H, W), H, W are not positive multiples of 14, or ``with_sigma`` for a
                model without a sigma head.
        """
        if with_sigma and self.sigma_head is None:
            raise ValueError("this model has no uncertainty (sigma) head")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an image batch of shape (B, 3, H, W), got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if height % PATCH_SIZE or width % PATCH_SIZE or height == 0 or width == 0:
            raise ValueError(f"image size {height}x{width} (HxW) is not a positive multiple of the patch size "
                             f"{PATCH_SIZE}; resize the input first")
        tokens = self.pretrained.intermediate_patch_tokens(x, self.config.layers)
        out = self.depth_head(tokens, height // PATCH_SIZE, width // PATCH_SIZE, with_sigma)
        depth, log_sigma = out if with_sigma else (out, None)
        depth = depth[:, 0] * self.max_depth if self.head == "metric" else depth[:, 0]
        return (depth, log_sigma[:, 0]) if with_sigma else depth
