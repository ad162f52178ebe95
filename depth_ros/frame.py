"""One camera image with what it was taken with, and the one rule that pairs an image with its CameraInfo.

Every reader and node builds its :class:`Frame` through :class:`CameraInfoCache`: depth_node and adaptation_node from
live CameraInfo messages, the bag tools and the bag dataset from a bag's CameraInfo topic. The rule follows
message_filters' ``ApproximateTime`` with the nearest candidate, restricted to CameraInfo that describes an image of
the frame's size (REP 104: binning and ROI change the size the intrinsics are for).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from depth_ros.geometry.camera import PinholeCamera, check_camera_matches
from depth_ros.stamps import StampedBuffer, nearest_index

CACHE_SIZE = 30
"""CameraInfo messages a live cache keeps per frame_id (1 s at 30 Hz)."""


@dataclass(frozen=True)
class Frame:
    """One colour image with its intrinsics, stamp, optical frame and, where known, depth and pose.

    Attributes:
        rgb: (H, W, 3) uint8 RGB.
        camera: intrinsics of ``rgb`` at this resolution; None when no CameraInfo fits (depth only, no points).
        stamp_ns: the image's header stamp, integer nanoseconds (exact, so that outputs carry it unchanged).
        frame_id: the image's optical frame (REP 103 ``_optical`` convention); "" when the source has none.
        depth: (H, W) float32 metres along the optical axis (REP 118), NaN invalid, registered to ``rgb``; None when
            the source has no depth.
        pose: (4, 4) float64 ``T_fixed_camera`` (maps camera points into the fixed frame: odom, map or the
            dataset's world) at ``stamp_ns``; None when unknown.
        name: where the frame came from (file name, or topic and stamp), for logs and per-frame reports.
    """

    rgb: np.ndarray
    camera: PinholeCamera | None
    stamp_ns: int
    frame_id: str = ""
    depth: np.ndarray | None = None
    pose: np.ndarray | None = None
    name: str = ""

    @property
    def stamp(self) -> float:
        """The stamp in seconds (float64)."""
        return self.stamp_ns / 1e9


class NoCameraError(ValueError):
    """No CameraInfo can describe this image (none for its frame_id yet, or none of its size)."""


@dataclass(frozen=True)
class CameraMatch:
    """The CameraInfo :meth:`CameraInfoCache.match` chose for an image.

    Attributes:
        camera: its intrinsics.
        offset: |CameraInfo stamp - image stamp| in seconds.
        size_warning: set when the CameraInfo nearest in time describes another image size (so an older or newer
            one of this size was taken); None otherwise.
        stamp_warning: set when ``offset`` exceeds the cache's tolerance; None otherwise.
    """

    camera: PinholeCamera
    offset: float
    size_warning: str | None = None
    stamp_warning: str | None = None


class CameraInfoCache:
    """The intrinsics of each optical frame over time, and the rule that picks an image's one. Thread-safe.

    Rule: of the CameraInfo with the image's frame_id, the one nearest in stamp (ties: the earlier); if that one
    describes another image size, the nearest of the image's size (warned); none of its size, or none at all:
    :class:`NoCameraError`.

    Args:
        tolerance: seconds between image and CameraInfo stamps above which a match carries a warning.
        capacity: CameraInfo kept per frame_id (the oldest go first); None keeps all (a recorded bag).

    Raises:
        ValueError: a negative tolerance (a capacity below 1 raises on the first :meth:`add`).
    """

    def __init__(self, tolerance: float, capacity: int | None = CACHE_SIZE):
        if not tolerance >= 0:
            raise ValueError(f"CameraInfo stamp tolerance must be >= 0 s, got {tolerance}")
        self.tolerance, self.capacity = tolerance, capacity
        self._lock = threading.Lock()
        self._cameras: dict[str, StampedBuffer] = {}

    def __getstate__(self) -> dict:  # picklable (DataLoader workers): the lock is per process
        with self._lock:
            return {"tolerance": self.tolerance, "capacity": self.capacity, "cameras": dict(self._cameras)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["tolerance"], state["capacity"])
        self._cameras = state["cameras"]

    def add(self, frame_id: str, stamp_ns: int, camera: PinholeCamera) -> None:
        """Remember ``camera`` for ``frame_id`` at ``stamp_ns`` (a repeated stamp replaces the earlier one)."""
        with self._lock:
            cameras = self._cameras.setdefault(frame_id, StampedBuffer(self.capacity))
        cameras.add(stamp_ns, camera)

    def match(self, frame_id: str, stamp_ns: int, height: int, width: int) -> CameraMatch:
        """The intrinsics of an image of ``width`` x ``height`` px from ``frame_id`` stamped ``stamp_ns``.

        Raises:
            NoCameraError: no CameraInfo for ``frame_id`` yet, or none of this image's size.
        """
        with self._lock:
            buffer = self._cameras.get(frame_id)
        stamps, cameras = buffer.snapshot() if buffer is not None else (np.zeros(0, np.int64), [])
        if not cameras:
            raise NoCameraError(f"no valid CameraInfo for frame '{frame_id}' yet")
        size_warning = stamp_warning = None
        nearest = nearest_index(stamps, stamp_ns, np.inf)
        try:
            check_camera_matches(cameras[nearest], height, width)
        except ValueError as error:
            fits = [i for i, camera in enumerate(cameras) if (camera.height, camera.width) == (height, width)]
            if not fits:
                raise NoCameraError(f"CameraInfo for frame '{frame_id}' does not fit this image: {error}") from None
            nearest = fits[nearest_index(stamps[fits], stamp_ns, np.inf)]
            size_warning = (f"CameraInfo for frame '{frame_id}' does not fit this image: {error}; using the "
                            "nearest one of its size")
        offset = abs(int(stamps[nearest]) - stamp_ns) / 1e9
        if offset > self.tolerance:
            stamp_warning = (f"no CameraInfo with the image's stamp for frame '{frame_id}': using one {offset:.3f} s "
                             f"apart (tolerance {self.tolerance} s)")
        return CameraMatch(cameras[nearest], offset, size_warning, stamp_warning)
