"""Camera poses of live images: one interface for the nodes, with a static extrinsic, odometry or tf2 behind it.

Each source answers ``T_fixed_camera`` (4x4 float64, maps camera optical-frame points into the fixed frame: REP 105
``odom`` or ``map``, or the robot base for a static mount) at an image's stamp, or raises
:class:`~depth_ros.geometry.transform.PoseLookupError` naming why not. Interpolation between odometry samples is
:class:`~depth_ros.geometry.transform.PoseTrajectory`'s (linear + Slerp), the one the offline readers use
(:mod:`depth_ros.data.poses`); tf2 interpolates its own buffer.
"""

from __future__ import annotations

import abc
import threading
from collections import deque

import numpy as np

from depth_ros.geometry.tf_tree import chain_transform, tf_edges
from depth_ros.geometry.transform import PoseLookupError, PoseTrajectory

ODOM_HISTORY = 10.0
"""Seconds of odometry :class:`OdometryPoses` keeps for interpolation."""
TIME_JUMP = 1.0
"""Seconds: odometry going back further than this restarts the history (a looped bag, a restarted clock)."""
MAX_GAP = 0.5
"""Longest interval in seconds between two odometry samples that is interpolated across."""


class CameraPoses(abc.ABC):
    """Where a node gets the pose of a camera at an image's stamp."""

    fixed_frame: str

    @abc.abstractmethod
    def ready(self, camera_frame: str, stamp_ns: int) -> bool:
        """True once :meth:`pose` can be asked for this stamp: it has the data up to it (it may still refuse)."""

    @abc.abstractmethod
    def pose(self, camera_frame: str, stamp_ns: int) -> np.ndarray:
        """``T_fixed_camera`` (4, 4) float64 of ``camera_frame`` at ``stamp_ns`` (integer nanoseconds).

        Raises:
            PoseLookupError: no pose there (names the frames and the stamp).
        """


class StaticPose(CameraPoses):
    """A camera rigidly mounted in ``fixed_frame`` (e.g. the base for a grid in ``base_link``): one pose always.

    Args:
        fixed_from_camera: (4, 4) ``T_fixed_camera``.
        fixed_frame: its frame name.
    """

    def __init__(self, fixed_from_camera: np.ndarray, fixed_frame: str):
        self.matrix = np.asarray(fixed_from_camera, dtype=np.float64)
        self.fixed_frame = fixed_frame

    def ready(self, camera_frame: str, stamp_ns: int) -> bool:
        return True

    def pose(self, camera_frame: str, stamp_ns: int) -> np.ndarray:
        return self.matrix


class TfPoses(CameraPoses):
    """tf2's ``lookup_transform(fixed_frame, camera_frame, stamp)``, from a Buffer that a TransformListener fills.

    Args:
        buffer: a ``tf2_ros.Buffer`` (see :func:`start_tf`).
        fixed_frame: target frame of the lookups.
        timeout: seconds :meth:`pose` waits for a transform not yet in the buffer.
    """

    def __init__(self, buffer, fixed_frame: str, timeout: float = 0.0):
        self.buffer, self.fixed_frame, self.timeout = buffer, fixed_frame, timeout

    def ready(self, camera_frame: str, stamp_ns: int) -> bool:
        from rclpy.time import Time

        return self.buffer.can_transform(self.fixed_frame, camera_frame, Time(nanoseconds=stamp_ns))

    def pose(self, camera_frame: str, stamp_ns: int) -> np.ndarray:
        from rclpy.duration import Duration
        from rclpy.time import Time

        from depth_ros.geometry.transform import pose_msg_to_matrix

        try:
            transform = self.buffer.lookup_transform(self.fixed_frame, camera_frame, Time(nanoseconds=stamp_ns),
                                                     timeout=Duration(seconds=self.timeout))
        except Exception as error:  # tf2_ros.TransformException and its kinds: no pose for this image
            raise PoseLookupError(f"tf2 has no {self.fixed_frame} -> {camera_frame} at {stamp_ns * 1e-9:.3f} s: "
                                  f"{error}") from None
        return pose_msg_to_matrix(transform)


class OdometryPoses(CameraPoses):
    """``T_odom_base(t) @ T_base_camera``: odometry (nav_msgs/Odometry, REP 105) interpolated at the stamp, times the
    camera extrinsic from ``/tf_static`` (chain base -> camera), else ``fallback_extrinsic``. Thread-safe.

    Args:
        fallback_extrinsic: (4, 4) ``T_base_camera`` used while /tf_static has no chain base -> camera.
        tolerance: seconds a stamp may lie beyond the odometry samples around it.
        fixed_frame: name of the odometry frame, for messages.
    """

    def __init__(self, fallback_extrinsic: np.ndarray, tolerance: float, fixed_frame: str = "odom"):
        self.fallback_extrinsic = np.asarray(fallback_extrinsic, dtype=np.float64)
        self.tolerance, self.fixed_frame = tolerance, fixed_frame
        self.base_frame = ""  # child_frame_id of the odometry
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, np.ndarray]] = deque()
        self._static: dict = {}

    def add_static(self, msg) -> None:
        """Take the transforms of a tf2_msgs/TFMessage from ``/tf_static``."""
        with self._lock:
            self._static.update(tf_edges([msg]))

    def add(self, stamp_ns: int, odom_from_base: np.ndarray, base_frame: str) -> bool:
        """Add one odometry sample. Returns True when it went back more than :data:`TIME_JUMP` (a looped bag or a
        restarted clock): the history was cleared and starts again from it.

        Raises:
            ValueError: a stamp not after the previous one (by less than :data:`TIME_JUMP`); the sample is dropped.
        """
        stamp = stamp_ns * 1e-9
        with self._lock:
            jumped = False
            if self._samples and stamp <= self._samples[-1][0]:
                if self._samples[-1][0] - stamp <= TIME_JUMP:
                    raise ValueError(f"stamp {stamp:.6f} s is not after the previous {self._samples[-1][0]:.6f} s")
                self._samples.clear()
                jumped = True
            self._samples.append((stamp, np.asarray(odom_from_base, dtype=np.float64)))
            while self._samples[-1][0] - self._samples[0][0] > ODOM_HISTORY:
                self._samples.popleft()
            self.base_frame = base_frame
            return jumped

    def ready(self, camera_frame: str, stamp_ns: int) -> bool:
        with self._lock:
            return bool(self._samples) and stamp_ns * 1e-9 <= self._samples[-1][0]

    def pose(self, camera_frame: str, stamp_ns: int) -> np.ndarray:
        with self._lock:
            samples, static, base = list(self._samples), dict(self._static), self.base_frame
        if not samples:
            raise PoseLookupError(f"no odometry yet for the image at {stamp_ns * 1e-9:.3f} s")
        trajectory = PoseTrajectory([s for s, _ in samples], [m for _, m in samples], self.fixed_frame,
                                    base or "base", tolerance=self.tolerance, max_gap=MAX_GAP)
        extrinsic = chain_transform(static, base, camera_frame) if static else None
        return trajectory.at(stamp_ns * 1e-9) @ (self.fallback_extrinsic if extrinsic is None else extrinsic)


def start_tf(node):
    """A tf2_ros Buffer filled by a TransformListener on ``node``: ``(buffer, listener)``, or None without tf2_ros
    (pip installs have no wheel; it comes with a ROS 2 distro). Keep the listener referenced."""
    try:
        import tf2_ros
    except ImportError:
        return None
    buffer = tf2_ros.Buffer()
    return buffer, tf2_ros.TransformListener(buffer, node)
