"""DINOv2 Vision Transformer encoder, as used by Depth Anything V2.

Source: Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", 2023; the module and parameter
names follow the reference implementation (facebookresearch/dinov2, vendored by DepthAnything/Depth-Anything-V2) so
that the official checkpoints load with ``strict=True``. Only what depth estimation needs is implemented: no masking,
no register tokens, no stochastic depth. ``mask_token`` is kept as an (unused) parameter because the official
checkpoints contain it.
"""

import torch
import torch.nn.functional as F
from torch import nn

# Geometry of the official pre-training: 518 px square images cut into 14 px patches, i.e. a 37 x 37 token grid.
PATCH_SIZE = 14
PRETRAIN_GRID = 37
# The reference adds this to the target grid size before computing the bicubic scale factor of the position
# embedding (a work-around for floating point rounding of the output size that DINOv2 kept); copying it exactly is
# required for equal outputs, because the scale factor (not only the output size) enters the bicubic sampling grid.
POS_EMBED_OFFSET = 0.1


class PatchEmbed(nn.Module):
    """Cut an image into non-overlapping patches and project each one linearly (a strided convolution).

    Input (B, 3, H, W) with H and W multiples of ``patch_size``; output tokens (B, H/p * W/p, dim) in row-major
    patch order.
    """

    def __init__(self, dim: int, patch_size: int = PATCH_SIZE, in_channels: int = 3):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection, computed by ``F.scaled_dot_product_attention``.

    Input and output (B, N, dim). The softmax scale is ``(dim / num_heads) ** -0.5`` as in the reference.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        # (B, N, 3*dim) -> 3 x (B, heads, N, head_dim)
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Mlp(nn.Module):
    """Two-layer feed-forward network with exact (erf) GELU: dim -> hidden -> dim."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """SwiGLU feed-forward network of ViT-g (Shazeer 2020, "GLU Variants Improve Transformer").

    ``w12`` produces the gate and value halves in one matrix: out = w3(silu(gate) * value). The hidden width is the
    reference's: 2/3 of ``hidden`` rounded up to a multiple of 8 (4096 for ViT-g's 1536 x 4).
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


class LayerScale(nn.Module):
    """Learnable per-channel scaling of a residual branch (Touvron et al. 2021, CaiT); parameter ``gamma`` (dim,)."""

    def __init__(self, dim: int, init_value: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1(attn(norm1(x))), then + ls2(mlp(norm2(x))). Shapes (B, N, dim)."""

    def __init__(self, dim: int, num_heads: int, ffn: str = "mlp", mlp_ratio: int = 4):
        super().__init__()
        ffn_class = {"mlp": Mlp, "swiglu": SwiGLUFFN}[ffn]
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ffn_class(dim, dim * mlp_ratio)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT with patch size 14 and a learned position embedding for a 37 x 37 grid (518 px pre-training).

    Args:
        dim: token width (384 ViT-S, 768 ViT-B, 1024 ViT-L, 1536 ViT-g).
        depth: number of transformer blocks.
        num_heads: attention heads per block.
        ffn: "mlp" (GELU MLP) or "swiglu" (ViT-g).

    Parameters (official names): ``cls_token`` (1, 1, dim), ``pos_embed`` (1, 1 + 37*37, dim), ``mask_token``
    (1, dim, unused), ``patch_embed.proj``, ``blocks.{i}.*``, ``norm`` (final LayerNorm, eps 1e-6).
    """

    def __init__(self, dim: int, depth: int, num_heads: int, ffn: str = "mlp"):
        super().__init__()
        self.embed_dim = dim
        self.patch_size = PATCH_SIZE
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + PRETRAIN_GRID**2, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.blocks = nn.ModuleList(Block(dim, num_heads, ffn) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        """Initialise the embeddings (layers keep PyTorch's defaults); pretrained weights normally replace all."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)

    def position_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Position embedding for a ``grid_h`` x ``grid_w`` patch grid, (1, 1 + grid_h*grid_w, dim) float32.

        The 37 x 37 table is resampled bicubically (align_corners=False, no antialiasing) with the scale factor
        ``(grid + 0.1) / 37`` per axis, exactly as the reference does; at 37 x 37 the table is used unchanged.
        The class-token embedding is never resampled.
        """
        if grid_h == PRETRAIN_GRID and grid_w == PRETRAIN_GRID:
            return self.pos_embed
        table = self.pos_embed.float()
        cls_pos, patch_pos = table[:, :1], table[:, 1:]
        patch_pos = patch_pos.reshape(1, PRETRAIN_GRID, PRETRAIN_GRID, -1).permute(0, 3, 1, 2)
        scale = ((grid_h + POS_EMBED_OFFSET) / PRETRAIN_GRID, (grid_w + POS_EMBED_OFFSET) / PRETRAIN_GRID)
        # floor((grid + 0.1) / 37 * 37) == grid: the offset keeps the output size from rounding down.
        patch_pos = F.interpolate(patch_pos, scale_factor=scale, mode="bicubic", align_corners=False, antialias=False)
        patch_pos = patch_pos.flatten(2).transpose(1, 2)
        return torch.cat((cls_pos, patch_pos), dim=1)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Embed an image: (B, 3, H, W) -> (B, 1 + H/14 * W/14, dim), class token first, positions added."""
        grid_h, grid_w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        patches = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(patches.shape[0], -1, -1).to(patches.dtype), patches), dim=1)
        return tokens + self.position_embedding(grid_h, grid_w).to(tokens.dtype)

    def intermediate_patch_tokens(self, x: torch.Tensor, layers: list[int] | tuple[int, ...]) -> list[torch.Tensor]:
        """Outputs of the given blocks (0-based indices), passed through the final ``norm``, class token removed.

        Args:
            x: (B, 3, H, W) ImageNet-normalised image, H and W multiples of 14.
            layers: block indices in increasing order.

        Returns:
            one (B, H/14 * W/14, dim) tensor per requested block, in row-major patch order.
        """
        wanted = set(layers)
        last = max(layers)
        out = []
        h = self.tokens(x)
        for index, block in enumerate(self.blocks[: last + 1]):
            h = block(h)
            if index in wanted:
                out.append(self.norm(h)[:, 1:])
        return out
