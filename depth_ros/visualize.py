"""Outputs meant for people: colourised depth images and PLY point clouds."""

from __future__ import annotations

import os

import numpy as np


def colorize_depth(depth: np.ndarray, vmin: float | None = None, vmax: float | None = None,
                   cmap: str = "turbo_r") -> np.ndarray:
    """Colourise a depth map for display.

    Args:
        depth: HxW float depth (metres or relative); NaN / inf are invalid.
        vmin: lower end of the colour range; default the 2nd percentile of the valid values.
        vmax: upper end of the colour range; default the 98th percentile of the valid values.
        cmap: matplotlib colour map name (``turbo_r``: near = red, far = blue).

    Returns:
        HxWx3 uint8 RGB; invalid pixels are black.
    """
    from matplotlib import colormaps

    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth)
    if not valid.any():
        return np.zeros((*depth.shape, 3), np.uint8)
    lo, hi = np.percentile(depth[valid], [2, 98])
    lo = lo if vmin is None else vmin
    hi = hi if vmax is None else vmax
    scaled = np.clip((np.where(valid, depth, lo) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    rgb = (colormaps[cmap](scaled)[..., :3] * 255.0 + 0.5).astype(np.uint8)
    rgb[~valid] = 0
    return rgb


def occupancy_image(grid: np.ndarray) -> np.ndarray:
    """An occupancy grid (HxW int8, row 0 at the lowest y: 100 occupied, 0 free, -1 unknown) as a grey image.

    Returns:
        HxW uint8: occupied (> 50) black, free white, unknown grey; rows flipped so that +y points up in the image.
    """
    grid = np.asarray(grid)
    image = np.full(grid.shape, 128, np.uint8)
    image[grid == 0] = 255
    image[grid > 50] = 0
    return np.flipud(image)


def save_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an HxWx3 uint8 RGB or HxW uint8 grey image (format from the file name, e.g. ``.png``) with OpenCV.

    Raises:
        OSError: the file cannot be written.
    """
    import cv2

    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"{path}: could not write image")


def save_ply(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray | None = None) -> None:
    """Write points (N,3 float, metres) and optional colours (N,3 uint8 RGB) to a binary PLY file with open3d.

    Non-finite points are dropped.

    Raises:
        OSError: the file cannot be written.
    """
    import open3d as o3d

    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    keep = np.isfinite(points).all(axis=1)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points[keep]))
    if colors is not None:
        colors = np.asarray(colors).reshape(-1, 3)[keep]
        cloud.colors = o3d.utility.Vector3dVector(colors.astype(np.float64) / 255.0)
    if not o3d.io.write_point_cloud(str(path), cloud):
        raise OSError(f"{path}: could not write PLY file")
