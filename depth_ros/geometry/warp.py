"""View synthesis: warp a source image into the target view with the target's depth and the relative camera pose.

The differentiable image formation model of self-supervised depth learning (Zhou et al., "Unsupervised Learning of
Depth and Ego-Motion from Video", CVPR 2017; Monodepth2's ``BackprojectDepth`` / ``Project3D``; PackNet-SfM's
``view_synthesis``): every target pixel is back-projected with its depth, moved into the source camera frame and
projected into the source image, which is sampled there bilinearly. Built on :class:`PinholeCamera` so clouds,
grids and photometric warping share one camera model (its ray grid is cached per resolution, device and dtype).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from depth_ros.geometry.camera import PinholeCamera


def view_synthesis(source: torch.Tensor, depth: torch.Tensor, camera: PinholeCamera,
                   target_to_source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstruct the target image from a source image.

    Frames are REP 103 optical frames (x right, y down, z forward) of the target and the source camera; both images
    share the intrinsics ``camera``.

    Args:
        source: (B, 3, H, W) float source image (any value range; it is only resampled).
        depth: (B, 1, H, W) float depth of the *target* image in metres along the optical axis (REP 118).
            Gradients flow into it through the sampling positions.
        camera: intrinsics of both images at (H, W).
        target_to_source: (B, 4, 4) float rigid transform ``T_source_target`` mapping points in the target camera
            frame into the source camera frame (metres); with camera-to-world poses it is
            ``inv(T_world_source) @ T_world_target`` (:func:`depth_ros.geometry.transform.relative_pose`).

    Returns:
        ``(reconstructed, valid)``: reconstructed (B, 3, H, W), the source sampled bilinearly where each target
        pixel lands (border padding); valid (B, 1, H, W) bool, True where the target pixel has positive finite
        depth, lands in front of the source camera (z > 0) and inside the source image (u in [-0.5, W - 0.5],
        v in [-0.5, H - 0.5], the image area under the pixel-centre convention).

    Raises:
        ValueError: shapes that do not fit each other or the camera.
    """
    batch, _, height, width = source.shape
    if source.ndim != 4 or source.shape[1] != 3:
        raise ValueError(f"source must be (B, 3, H, W), got {tuple(source.shape)}")
    if tuple(depth.shape) != (batch, 1, height, width):
        raise ValueError(f"depth must be (B, 1, H, W) = {(batch, 1, height, width)}, got {tuple(depth.shape)}")
    if tuple(target_to_source.shape) != (batch, 4, 4):
        raise ValueError(f"target_to_source must be (B, 4, 4) = {(batch, 4, 4)}, got {tuple(target_to_source.shape)}")
    if (camera.height, camera.width) != (height, width):
        raise ValueError(f"camera is {camera.width}x{camera.height} but the images are {width}x{height}")

    transform = target_to_source.to(depth.dtype)
    points = camera.backproject(depth[:, 0])  # (B, H, W, 3) in the target frame
    rotation, translation = transform[:, :3, :3], transform[:, :3, 3]
    moved = torch.einsum("bij,bhwj->bhwi", rotation, points) + translation[:, None, None, :]
    uv, z = camera.project(moved)  # NaN where z <= 0
    u, v = uv[..., 0], uv[..., 1]
    valid = (z > 0) & (u >= -0.5) & (u <= width - 0.5) & (v >= -0.5) & (v <= height - 0.5) & (depth[:, 0] > 0)
    # grid_sample's normalised coordinates with align_corners=False: -1 and 1 are the outer image edges, i.e. pixel
    # coordinates -0.5 and W - 0.5 under the pixel-centre convention of PinholeCamera
    grid = torch.stack(((2 * u + 1) / width - 1, (2 * v + 1) / height - 1), dim=-1)
    grid = torch.where(torch.isfinite(grid), grid, torch.full_like(grid, -2.0))
    reconstructed = F.grid_sample(source.to(grid.dtype), grid, mode="bilinear", padding_mode="border",
                                  align_corners=False)
    return reconstructed.to(source.dtype), valid.unsqueeze(1)
