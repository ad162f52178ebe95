"""Point-cloud layout for sensor_msgs/PointCloud2: organised or dense clouds, range limit, voxel down-sampling.

Clouds are numpy structured arrays with little-endian float32 fields ``x, y, z`` (:data:`XYZ_DTYPE`, 12 bytes) or
``x, y, z, rgb`` (:data:`XYZRGB_DTYPE`, 16 bytes), which ``depth_ros.ros.conversions.points_to_cloud_msg``
serialises in one copy. The field names and the ``rgb`` packing are those of depth_image_proc's
point_cloud_xyz / point_cloud_xyzrgb, so RViz and PCL read them alike; unlike depth_image_proc (16/32-byte points
padded for SSE) the points are packed tightly, which halves the DDS payload of a coloured cloud.
"""

from __future__ import annotations

import numpy as np

XYZ_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
XYZRGB_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4")])


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Pack (..., 3) uint8 RGB into the float32 ``rgb`` field of PointCloud2, as depth_image_proc does.

    The 32 bits are the uint32 ``0x00RRGGBB`` reinterpreted as float32 (little-endian bytes B, G, R, 0: sensor_msgs'
    PointCloud2Iterator writes b at offset 0, g at 1, r at 2 and leaves byte 3 zero).

    Returns:
        (...) float32 array (most values are not meaningful as floats; read them back with :func:`unpack_rgb`).
    """
    rgb = np.asarray(rgb, dtype=np.uint8)
    packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    return packed.astype("<u4").view("<f4")


def unpack_rgb(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_rgb`: (...) float32 packed colours -> (..., 3) uint8 RGB."""
    bits = np.ascontiguousarray(packed, dtype="<f4").view("<u4")
    return np.stack(((bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF), axis=-1).astype(np.uint8)


def build_cloud(
    points: np.ndarray,
    colors: np.ndarray | None = None,
    *,
    organised: bool = True,
    stride: int = 1,
    max_range: float | None = None,
    voxel_size: float | None = None,
) -> np.ndarray:
    """Lay out back-projected points as a PointCloud2-ready structured array.

    Args:
        points: (height, width, 3) float32 points (e.g. ``PinholeCamera.backproject``), NaN where invalid, in
            metres in any frame (the camera optical frame for the ``points`` topic). A point with any non-finite
            coordinate is invalid.
        colors: optional (height, width, 3) uint8 RGB of the same pixels; adds the packed ``rgb`` field.
        organised: True: keep the image layout, (height, width) with NaN for invalid points (like
            depth_image_proc; the message gets is_dense false). False: a 1-D cloud of the valid points only.
        stride: keep every ``stride``-th row and column (both layouts).
        max_range: if set, points farther than this Euclidean distance (metres) from the frame origin are invalid.
        voxel_size: if set (metres, unorganised clouds only), replace the points of each voxel by their centroid
            (and mean colour) with open3d's ``voxel_down_sample``.

    Returns:
        structured array of :data:`XYZ_DTYPE` or :data:`XYZRGB_DTYPE`, shape (ceil(height / stride),
        ceil(width / stride)) when organised, else (N,).

    Raises:
        ValueError: for mismatched shapes, stride < 1, non-positive max_range/voxel_size, or voxel_size with an
            organised cloud.
    """
    _check_cloud_arguments(points, colors, organised, stride, max_range, voxel_size)
    if stride > 1:
        points = points[::stride, ::stride]
        colors = None if colors is None else colors[::stride, ::stride]
    dtype = XYZ_DTYPE if colors is None else XYZRGB_DTYPE
    # fill a plain float32 (rows, cols, 3 or 4) array, then view it as the structured dtype: contiguous and fast
    flat = np.empty((*points.shape[:2], len(dtype.names)), dtype=np.float32)
    flat[..., :3] = points
    if colors is not None:
        flat[..., 3] = pack_rgb(colors)
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(x + y + z)  # per-axis sums: much faster than np.isnan(points).any(axis=-1)
        if max_range is not None:
            valid &= x * x + y * y + z * z <= max_range * max_range
    if organised:
        flat[..., :3][~valid] = np.nan
        return flat.view(dtype)[..., 0]

    flat = flat[valid]
    if voxel_size is not None and len(flat):
        xyz, rgb = _voxel_down_sample(flat[:, :3], None if colors is None else colors[valid], voxel_size)
        flat = np.empty((len(xyz), len(dtype.names)), dtype=np.float32)
        flat[:, :3] = xyz
        if rgb is not None:
            flat[:, 3] = pack_rgb(rgb)
    return flat.view(dtype)[:, 0]


def _check_cloud_arguments(points, colors, organised, stride, max_range, voxel_size) -> None:
    """Raise the ValueError :func:`build_cloud` documents for bad arguments."""
    if points.ndim != 3 or points.shape[2] != 3:
        raise ValueError(f"points must be (height, width, 3), got {points.shape}")
    if colors is not None and colors.shape != points.shape:
        raise ValueError(f"colors {colors.shape} must match points {points.shape}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if max_range is not None and not max_range > 0:
        raise ValueError(f"max_range must be > 0, got {max_range}")
    if voxel_size is not None and (organised or not voxel_size > 0):
        raise ValueError(f"voxel_size ({voxel_size}) needs organised=False and a value > 0")


def _voxel_down_sample(xyz: np.ndarray, rgb: np.ndarray | None, voxel_size: float):
    """Centroid (and mean colour) per voxel with open3d; returns (M, 3) float32 points and (M, 3) uint8 or None."""
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz.astype(np.float64)))
    if rgb is not None:
        cloud.colors = o3d.utility.Vector3dVector(rgb.astype(np.float64) / 255.0)
    down = cloud.voxel_down_sample(voxel_size)
    out_rgb = None if rgb is None else np.rint(np.asarray(down.colors) * 255.0).astype(np.uint8)
    return np.asarray(down.points, dtype=np.float32), out_rgb
