"""Rigid transforms as 4x4 homogeneous matrices (rotations via scipy.spatial.transform.Rotation).

Convention: ``T_a_b`` maps points expressed in frame b into frame a (``p_a = T_a_b @ p_b``); this is the transform
tf2 returns for ``lookup_transform(target_frame=a, source_frame=b)``, and it is also the pose of frame b in frame a
(a camera pose ``T_world_camera`` maps camera-frame points into the world). Frames follow REP 103 / REP 105.

One place for the pose algebra of the package: matrices from messages, Euler poses and TUM lines, relative poses,
and :class:`PoseTrajectory` (interpolation at image stamps: linear translation, scipy ``Slerp`` rotation).
"""

from __future__ import annotations

import copy

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

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


def pose_matrix(xyz_rpy) -> np.ndarray:
    """4x4 float64 rigid transform from [x, y, z] metres and [roll, pitch, yaw] radians.

    Roll, pitch and yaw rotate about the fixed x, y and z axes in that order (R = Rz(yaw) Ry(pitch) Rx(roll)), the
    convention of tf2's static_transform_publisher and URDF ``rpy``.

    Raises:
        ValueError: when not 6 finite numbers.
    """
    values = np.asarray(xyz_rpy, dtype=np.float64)
    if values.shape != (6,) or not np.isfinite(values).all():
        raise ValueError(f"pose must be 6 finite numbers [x, y, z, roll, pitch, yaw], got {values.tolist()}")
    return transform_matrix(values[:3], Rotation.from_euler("xyz", values[3:]).as_quat())


def translation_quaternion(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`transform_matrix`: (3,) translation in metres and (4,) unit quaternion (x, y, z, w)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return matrix[:3, 3].copy(), Rotation.from_matrix(matrix[:3, :3]).as_quat()


def relative_pose(world_from_source: np.ndarray, world_from_target: np.ndarray) -> np.ndarray:
    """``T_source_target = T_world_source^-1 @ T_world_target``: maps target-frame points into the source frame.

    This is the ``target_to_source`` transform of :func:`depth_ros.geometry.warp.view_synthesis` when both poses are
    camera-to-world poses (``T_world_camera``) of two images.

    Args:
        world_from_source: (..., 4, 4) pose of the source frame in the world (``T_world_source``).
        world_from_target: (..., 4, 4) pose of the target frame in the world (``T_world_target``).

    Returns:
        (..., 4, 4) float64 ``T_source_target``.
    """
    source = np.asarray(world_from_source, dtype=np.float64)
    rotation_t = np.swapaxes(source[..., :3, :3], -1, -2)
    inverse = np.zeros(source.shape)
    inverse[..., :3, :3] = rotation_t
    inverse[..., :3, 3] = -(rotation_t @ source[..., :3, 3:4])[..., 0]
    inverse[..., 3, 3] = 1.0
    return inverse @ np.asarray(world_from_target, dtype=np.float64)


def motion(transform: np.ndarray) -> tuple[float, float]:
    """Size of a rigid motion: (translation in metres, rotation angle in degrees) of a 4x4 transform."""
    transform = np.asarray(transform, dtype=np.float64)
    return (float(np.linalg.norm(transform[:3, 3])),
            float(np.degrees(Rotation.from_matrix(transform[:3, :3]).magnitude())))


def pose_msg_to_matrix(msg) -> np.ndarray:
    """4x4 float64 ``T_parent_child`` of a ROS pose-like message (rclpy or rosbags, duck-typed).

    Accepts geometry_msgs/Transform, TransformStamped (``transform``), Pose (``position`` / ``orientation``),
    PoseStamped and PoseWithCovariance(Stamped) (``pose``), and nav_msgs/Odometry (``pose.pose``: the pose of
    ``child_frame_id`` in ``header.frame_id``, REP 105).

    Raises:
        ValueError: the message holds none of these fields, or a non-finite / zero quaternion.
    """
    while not hasattr(msg, "translation") and not hasattr(msg, "position"):
        inner = getattr(msg, "transform", None) or getattr(msg, "pose", None)
        if inner is None:
            raise ValueError(f"{type(msg).__name__} is not a pose, transform or odometry message")
        msg = inner
    if hasattr(msg, "translation"):
        t, q = msg.translation, msg.rotation
    else:
        t, q = msg.position, msg.orientation
    return transform_matrix((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))


def parse_tum_line(line: str) -> tuple[float, np.ndarray]:
    """One TUM trajectory line ``timestamp tx ty tz qx qy qz qw`` -> (stamp s, 4x4 ``T_world_frame``).

    Format of the TUM RGB-D benchmark's ``groundtruth.txt`` (Sturm et al., IROS 2012): the pose of the camera's
    optical frame in the world, metres, quaternion x, y, z, w.

    Raises:
        ValueError: not 8 numbers, or an invalid pose.
    """
    fields = line.split()
    try:
        values = [float(v) for v in fields]
    except ValueError:
        values = []
    if len(values) != 8:
        raise ValueError(f"expected 'timestamp tx ty tz qx qy qz qw', got {line.strip()!r}")
    return values[0], transform_matrix(values[1:4], values[4:8])


def format_tum_line(stamp: float, matrix: np.ndarray) -> str:
    """Inverse of :func:`parse_tum_line` (9 significant digits for the pose, microseconds for the stamp)."""
    translation, quaternion = translation_quaternion(matrix)
    return f"{stamp:.6f} " + " ".join(f"{v:.9g}" for v in (*translation, *quaternion))


class PoseLookupError(ValueError):
    """No pose can be given for a stamp: outside the trajectory, or inside a gap between samples too far apart."""


class PoseTrajectory:
    """Timed poses ``T_parent_frame(t)`` of one frame, interpolated at any stamp they cover.

    Interpolation is linear in translation and spherical-linear in rotation (scipy's ``Slerp``) between the two
    samples around a stamp. A stamp before the first / after the last sample by at most ``tolerance`` seconds takes
    that end's pose; further out, or inside a gap between samples longer than ``max_gap`` seconds, there is no pose.

    Args:
        stamps: (N,) seconds, N >= 1, strictly increasing after sorting (duplicates are an error).
        matrices: (N, 4, 4) rigid transforms ``T_parent_frame`` (metres).
        parent: name of the fixed frame (e.g. ``odom``, ``world``), for messages.
        child: name of the moving frame (e.g. ``base_link``, ``camera_optical_frame``).
        tolerance: seconds a stamp may lie outside the sampled span.
        max_gap: longest interval in seconds between two samples that is interpolated across (None: any).

    Raises:
        ValueError: mismatched shapes, no sample, non-finite values, or two samples with one stamp.
    """

    def __init__(self, stamps, matrices, parent: str = "world", child: str = "frame", tolerance: float = 0.02,
                 max_gap: float | None = 0.5):
        stamps = np.asarray(stamps, dtype=np.float64)
        matrices = np.asarray(matrices, dtype=np.float64)
        if stamps.ndim != 1 or len(stamps) == 0 or matrices.shape != (len(stamps), 4, 4):
            raise ValueError(f"trajectory {parent} -> {child}: need N >= 1 stamps and (N, 4, 4) poses, got "
                             f"{stamps.shape} and {matrices.shape}")
        if not (np.isfinite(stamps).all() and np.isfinite(matrices).all()):
            raise ValueError(f"trajectory {parent} -> {child}: non-finite stamp or pose")
        order = np.argsort(stamps, kind="stable")
        stamps, matrices = stamps[order], matrices[order]
        if np.any(np.diff(stamps) <= 0):
            duplicate = stamps[1:][np.diff(stamps) <= 0][0]
            raise ValueError(f"trajectory {parent} -> {child}: two poses at stamp {duplicate:.9f} s")
        self.stamps, self.matrices = stamps, matrices
        self.parent, self.child = parent, child
        self.tolerance, self.max_gap = float(tolerance), max_gap
        self.offset = np.eye(4)  # right factor of :meth:`attached` frames
        self._rotations = Rotation.from_matrix(matrices[:, :3, :3])
        self._slerp = Slerp(stamps, self._rotations) if len(stamps) > 1 else None

    def __len__(self) -> int:
        return len(self.stamps)

    def __repr__(self) -> str:
        return (f"PoseTrajectory({self.parent} -> {self.child}, {len(self)} poses, "
                f"{self.stamps[0]:.3f}..{self.stamps[-1]:.3f} s)")

    def covers(self, stamps) -> np.ndarray:
        """(M,) bool: which stamps :meth:`at` can give a pose for."""
        stamps = np.atleast_1d(np.asarray(stamps, dtype=np.float64))
        inside = (stamps >= self.stamps[0] - self.tolerance) & (stamps <= self.stamps[-1] + self.tolerance)
        if self.max_gap is not None and len(self) > 1:
            right = np.clip(np.searchsorted(self.stamps, stamps), 1, len(self) - 1)
            gap = self.stamps[right] - self.stamps[right - 1]
            within = (stamps >= self.stamps[0]) & (stamps <= self.stamps[-1])
            near_sample = np.minimum(np.abs(stamps - self.stamps[right]),
                                     np.abs(stamps - self.stamps[right - 1])) <= self.tolerance
            inside &= ~within | (gap <= self.max_gap) | near_sample
        return inside

    def at(self, stamps) -> np.ndarray:
        """Poses at ``stamps``: (M,) seconds -> (M, 4, 4) float64 ``T_parent_frame`` (a scalar stamp gives (4, 4)).

        Exact at the samples; at the midpoint of two samples the translation is their mean and the rotation the
        half-way slerp.

        Raises:
            PoseLookupError: a stamp outside the trajectory (beyond ``tolerance``) or in a gap longer than
                ``max_gap``; the message names the first such stamp and the span covered.
        """
        scalar = np.ndim(stamps) == 0
        stamps = np.atleast_1d(np.asarray(stamps, dtype=np.float64))
        covered = self.covers(stamps)
        if not covered.all():
            bad = stamps[~covered][0]
            raise PoseLookupError(
                f"no {self.parent} -> {self.child} pose at {bad:.6f} s: the trajectory covers "
                f"{self.stamps[0]:.6f}..{self.stamps[-1]:.6f} s (tolerance {self.tolerance} s, max gap "
                f"{self.max_gap} s) in {len(self)} poses")
        clamped = np.clip(stamps, self.stamps[0], self.stamps[-1])
        out = np.zeros((len(stamps), 4, 4))
        out[:, 3, 3] = 1.0
        if self._slerp is None:
            out[:] = self.matrices[0]
        else:
            out[:, :3, :3] = self._slerp(clamped).as_matrix()
            for axis in range(3):
                out[:, axis, 3] = np.interp(clamped, self.stamps, self.matrices[:, axis, 3])
        out = out @ self.offset
        return out[0] if scalar else out

    def attached(self, frame_from_attached: np.ndarray, child: str | None = None) -> PoseTrajectory:
        """The trajectory of a frame rigidly attached to this one: ``T_parent_attached(t) = T_parent_frame(t) @
        T_frame_attached`` (e.g. odometry of ``base_link`` and the static ``base_link -> camera_optical_frame``
        extrinsic give the camera's trajectory in ``odom``). The offset is applied after interpolation, so the
        attached frame moves with the rigid body between samples."""
        attached = copy.copy(self)
        attached.offset = self.offset @ np.asarray(frame_from_attached, dtype=np.float64)
        attached.child = child or f"{self.child}+offset"
        return attached

    @classmethod
    def from_tum_file(cls, path, **kwargs) -> PoseTrajectory:
        """A trajectory from a TUM file (``groundtruth.txt``: camera optical frame to world; ``#`` comments).

        Raises:
            FileNotFoundError: no such file.
            ValueError: a malformed line (the message names file and line number).
        """
        from pathlib import Path

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such trajectory file")
        stamps, matrices = [], []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                stamp, matrix = parse_tum_line(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: {exc}") from None
            stamps.append(stamp)
            matrices.append(matrix)
        kwargs.setdefault("child", "camera_optical_frame")
        return cls(stamps, matrices, **kwargs)
