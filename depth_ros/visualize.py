"""Outputs meant for people: colourised depth images and PLY point clouds."""

from __future__ import annotations

import os

import numpy as np

from depth_ros.files import atomic_write


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
    """Write an HxWx3 uint8 RGB or HxW uint8 grey image (format from the file name, e.g. ``.png``) with OpenCV,
    atomically (:func:`depth_ros.files.atomic_write`).

    Raises:
        OSError: the file cannot be written.
    """
    import cv2

    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    with atomic_write(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"{path}: could not write image")


def save_ply(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray | None = None) -> None:
    """Write points (N,3 float, metres) and optional colours (N,3 uint8 RGB) to a binary PLY file with open3d,
    atomically (:func:`depth_ros.files.atomic_write`).

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
    with atomic_write(path) as tmp:
        if not o3d.io.write_point_cloud(str(tmp), cloud):
            raise OSError(f"{path}: could not write PLY file")


def save_overview(path: str | os.PathLike, rgb: np.ndarray, depth: np.ndarray, camera, grid: np.ndarray | None,
                  grid_spec=None, grid_from_camera: np.ndarray | None = None,
                  ground_truth: np.ndarray | None = None, title: str = "") -> None:
    """One figure of a depth result for people (matplotlib, headless Agg backend).

    Panels: the input image; the depth with a colour bar in metres; with ``ground_truth`` the ground truth on the
    same colour range and the absolute relative error ``|pred - gt| / gt``; with ``grid`` the occupancy grid with
    axes in metres of the grid frame, the camera's position and its horizontal field of view.

    Args:
        path: image file to write (``.png``).
        rgb: (H, W, 3) uint8 input image.
        depth: (h, w) float32 metres, NaN invalid (any resolution; shown as is).
        camera: :class:`~depth_ros.geometry.camera.PinholeCamera` of ``rgb`` (field of view).
        grid: (rows, cols) int8 occupancy (100 occupied, 0 free, -1 unknown; row 0 at the lowest y), or None.
        grid_spec: :class:`~depth_ros.geometry.occupancy.GridSpec` of ``grid`` (resolution and origin, metres).
        grid_from_camera: (4, 4) pose of the camera optical frame in the grid frame (``T_grid_camera``: maps
            camera coordinates into grid coordinates); None: the camera is not drawn.
        ground_truth: (h', w') float32 metres, NaN unknown, or None; resized to ``depth``'s grid by nearest
            neighbour when its size differs.
        title: figure title (e.g. which model ran).

    Raises:
        OSError: the file cannot be written.
    """
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    depth = np.asarray(depth, dtype=np.float32)
    if ground_truth is not None and ground_truth.shape != depth.shape:
        ground_truth = cv2.resize(ground_truth, depth.shape[::-1], interpolation=cv2.INTER_NEAREST)
    reference = ground_truth if ground_truth is not None else depth
    valid = np.isfinite(reference)
    low, high = np.percentile(reference[valid], [2, 98]) if valid.any() else (0.0, 1.0)
    panels = ["input", "depth"] + (["truth", "error"] if ground_truth is not None else []) + (
        ["grid"] if grid is not None else [])
    columns = 3 if len(panels) > 4 else 2
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels, strict=False):  # spare axes are hidden above
        if panel == "grid":
            _draw_grid(ax, grid, grid_spec, camera, grid_from_camera)
        else:
            _draw_image_panel(figure, ax, panel, rgb, depth, ground_truth, (low, high))
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=90)
    finally:
        plt.close(figure)


def _draw_image_panel(figure, ax, panel: str, rgb: np.ndarray, depth: np.ndarray, ground_truth: np.ndarray | None,
                      depth_range: tuple[float, float]) -> None:
    """One image panel of :func:`save_overview`: ``input``, ``depth``, ``truth`` or ``error`` (AbsRel per pixel)."""
    if panel == "input":
        ax.imshow(rgb)
        ax.set_title("input")
    elif panel in ("depth", "truth"):
        shown = np.ma.masked_invalid(depth if panel == "depth" else ground_truth)
        image = ax.imshow(shown, cmap="turbo_r", vmin=depth_range[0], vmax=depth_range[1])
        figure.colorbar(image, ax=ax, label="depth (m)", shrink=0.85)
        ax.set_title("predicted depth" if panel == "depth" else "ground truth")
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            error = np.abs(depth - ground_truth) / ground_truth
        image = ax.imshow(np.ma.masked_invalid(error), cmap="magma", vmin=0.0, vmax=0.5)
        figure.colorbar(image, ax=ax, label="|pred - gt| / gt", shrink=0.85)
        ax.set_title(f"absolute relative error (median {np.nanmedian(error):.3f})"
                     if np.isfinite(error).any() else "absolute relative error")
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_grid(ax, grid: np.ndarray, spec, camera, grid_from_camera: np.ndarray | None) -> None:
    """The occupancy grid in metres (x right, y up, as RViz shows a grid frame seen from above) and the camera."""
    extent = (spec.origin_x, spec.origin_x + spec.width * spec.resolution,
              spec.origin_y, spec.origin_y + spec.height * spec.resolution)
    ax.imshow(occupancy_image(grid), cmap="gray", vmin=0, vmax=255, extent=extent)
    if grid_from_camera is not None:
        half = camera.width / (2.0 * camera.fx)  # tan of half the horizontal field of view
        reach = 0.25 * min(extent[1] - extent[0], extent[3] - extent[2])
        origin = grid_from_camera[:3, 3]
        for ray in ((-half, 0.0, 1.0), (half, 0.0, 1.0)):
            direction = grid_from_camera[:3, :3] @ np.asarray(ray)
            planar = direction[:2] / max(np.linalg.norm(direction[:2]), 1e-9)
            ax.plot(*np.stack([origin[:2], origin[:2] + reach * planar]).T, color="tab:orange", linewidth=1.5)
        ax.plot(*origin[:2], marker="o", color="tab:orange", label="camera, horizontal field of view")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title(f"occupancy grid ({spec.resolution:.2f} m cells)")
