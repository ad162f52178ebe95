"""Rigid transforms as 4x4 homogeneous matrices (rotations via scipy.spatial.transform.Rotation).

Convention: ``T_a_b`` maps points expressed in frame b into frame a (``p_a = T_a_b @ p_b``); this is the transform
tf2 returns for ``lookup_transform(target_frame=a, source_frame=b)``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

# REP 103: optical frames are x right, y down, z forward; body frames (camera_link, base_link) are x forward,
# y left, z up. T_body_optical maps optical-frame points into the body frame: x_body = z_opt, y_body = -x_opt,
# z_body = -y_opt. It equals the usual camera_link -> camera_optical_frame static transform, quaternion
# (x, y, z, w) = (-0.5, 0.5, -0.5, 0.5), i.e. roll -pi/2, yaw -pi/2.
OPTICAL_TO_BODY = np.array(
    [
        [0.0, 0.0, 1.0, 0.0],
        [-1.0, 0.0, 0.0, 0.0],
        [0.0, -1.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
OPTICAL_TO_BODY.flags.writeable = False


def transform_matrix(translation, quaternion_xyzw) -> np.ndarray:
    """4x4 float64 matrix from a translation (x, y, z) in metres and a unit quaternion (x, y, z, w).

    The quaternion order is ROS's (geometry_msgs/Quaternion, scipy's ``from_quat``), not w-first.

    Raises:
        ValueError: for a zero or non-finite quaternion or a non-finite translation.
    """
    translation = np.asarray(translation, dtype=np.float64)
    quaternion = np.asarray(quaternion_xyzw, dtype=np.float64)
    if translation.shape != (3,) or not np.isfinite(translation).all():
        raise ValueError(f"translation must be 3 finite numbers, got {translation.tolist()}")
    if quaternion.shape != (4,) or not np.isfinite(quaternion).all() or not np.linalg.norm(quaternion) > 0:
        raise ValueError(f"quaternion (x, y, z, w) must be 4 finite numbers, not all zero, got {quaternion.tolist()}")
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_quat(quaternion).as_matrix()
    matrix[:3, 3] = translation
    return matrix


def invert_transform(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (``T_b_a`` from ``T_a_b``), using R^T instead of a general inverse."""
    rotation_t = matrix[:3, :3].T
    inverse = np.eye(4)
    inverse[:3, :3] = rotation_t
    inverse[:3, 3] = -rotation_t @ matrix[:3, 3]
    return inverse


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to (..., 3) points; NaN points stay NaN.

    Returns:
        (..., 3) points in the target frame, float32 for float32 input (computed in float32), else float64.
    """
    dtype = np.float32 if points.dtype == np.float32 else np.float64
    rotation = matrix[:3, :3].astype(dtype)
    translation = matrix[:3, 3].astype(dtype)
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    out = np.empty(points.shape, dtype=dtype)
    # one row of the rotation at a time: ~50x faster than `points @ rotation.T` for (N, 3) with numpy's matmul
    for row in range(3):
        out[..., row] = rotation[row, 0] * x + rotation[row, 1] * y + rotation[row, 2] * z + translation[row]
    return out
