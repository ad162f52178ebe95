"""Instant metric scale from the robot's own motion, without a weight update.

The idea of PTC-Depth (CVPR 2026): the network's depth is right in structure but off by a global factor; odometry
knows how far the camera moved, so points seen from two camera positions can be triangulated in metres and compared
with the network's depth at the same pixels. Here:

1. Pairing: the current image is measured against a reference image taken earlier; the reference is kept until the
   camera has moved ``min_baseline`` metres (odometry), then the current image becomes the next reference.
2. Tracking: corners of the reference (``cv2.goodFeaturesToTrack``) are followed into the current image with
   pyramidal Lucas-Kanade optical flow (``cv2.calcOpticalFlowPyrLK``) and back; a track whose backward flow does not
   return within ``max_fb_error`` px of its start is dropped (forward-backward check).
3. Relative pose: the translation (length and direction) is the odometry's ``T_reference_current`` (metres), what
   wheel odometry measures well; its rotation is corrected to fit the tracks' epipolar geometry (a depth-free fit
   with the odometry rotation as prior), so a wandering yaw rate or images and poses not quite in sync do not bias
   the triangulation.
4. Triangulation: with that pose both cameras' projection matrices are known, and each track is triangulated
   linearly (DLT, Hartley & Zisserman, *Multiple View Geometry*, 2nd ed., section 12.2; ``cv2.triangulatePoints``)
   into the current camera's optical frame.
5. Observation: ``log(z_triangulated / z_network)`` per track; the frame's observation is their median, its
   uncertainty their robust spread (1.4826 x median absolute deviation).
6. Filter: a one-state Kalman filter on the log of the factor, with a random-walk process noise (the network's scale
   error changes slowly with the scene), fuses the observations.

Frames that cannot give a trustworthy observation are rejected with a named reason (:data:`REJECTIONS`): too little
camera motion, motion that is only a rotation, too little parallax in the image, an image frozen while the odometry
moves, a dark or texture-less image, too few tracks. Time going backwards (a looped bag, a restarted clock) or a gap
between frames longer than ``max_gap`` restarts the pairing (the next image is a new reference) instead of comparing
images far apart in time; the fused factor itself is kept, because camera and network did not change (call
:meth:`InstantScale.reset` when they do).

The factor multiplies the depth that :mod:`depth_ros.published_depth` converts (``published depth x factor``); the
filter must be fed that depth *before* its own factor is applied, so it never measures its own output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from depth_ros.geometry.camera import PinholeCamera
from depth_ros.geometry.transform import motion, relative_pose

DARK = "dark or texture-less image"
FROZEN = "image frozen while moving"
NOT_MOVED = "not moved enough"
ROTATION = "pure rotation"
LOW_PARALLAX = "low parallax"
FEW_TRACKS = "too few tracked points"
OUTLIER = "observation far from the estimate"
POSE_JUMP = "pose jump"
CLOCK_JUMP = "clock jump"
GAP = "gap between frames"
REJECTIONS = (DARK, FROZEN, NOT_MOVED, ROTATION, LOW_PARALLAX, FEW_TRACKS, OUTLIER, POSE_JUMP, CLOCK_JUMP, GAP)
"""Every reason :meth:`InstantScale.update` gives for a frame that made no observation."""


@dataclass(frozen=True)
class InstantScaleOptions:
    """Thresholds and noise of :class:`InstantScale`.

    Attributes:
        min_baseline: metres the camera must move (odometry) between reference and current image.
        max_baseline: metres between two paired images beyond which the odometry is taken to have jumped.
        min_rotation: degrees of rotation that, without ``min_baseline`` of translation within ``max_pair_age``,
            make a "pure rotation".
        min_parallax: median pixels of image motion due to translation (rotation removed) a pair must have.
        max_pair_age: seconds a reference waits for the camera to move before the current image replaces it.
        max_gap: seconds between two consecutive images above which the pairing restarts (a pose or frame gap).
        max_features, min_tracks: corners tracked per reference, and tracks a pair needs after the checks.
        max_fb_error: pixels a forward-backward tracked corner may land from where it started (also the scale of
            the robust loss of the rotation fit).
        track_noise: pixels of error of a track assumed by the rotation fit (weighs the tracks against the prior).
        rotation_sigma: degrees of error of the odometry's rotation between two paired images (the rotation fit's
            prior).
        min_texture: grey-level standard deviation (0..255) below which an image is dark or texture-less.
        gate, gate_after: once ``gate_after`` observations are fused, an observation more than ``gate`` standard
            deviations (of estimate and observation) from the estimate is rejected as an outlier.
        initial_sigma: standard deviation of the log-factor before the first observation (the factor starts at 1).
        process_noise: random-walk standard deviation of the log-factor per square root of a second.
        min_sigma: floor of an observation's log standard deviation (tracks share odometry and network errors,
            so their spread understates the error of a frame's median).
    """

    min_baseline: float = 0.05
    max_baseline: float = 0.5
    min_rotation: float = 1.0
    min_parallax: float = 2.0
    max_pair_age: float = 1.0
    max_gap: float = 0.5
    max_features: int = 300
    min_tracks: int = 20
    max_fb_error: float = 1.0
    track_noise: float = 0.5
    rotation_sigma: float = 2.0
    min_texture: float = 8.0
    initial_sigma: float = 0.5
    gate: float = 5.0
    gate_after: int = 5
    process_noise: float = 0.005
    min_sigma: float = 0.1


@dataclass(frozen=True)
class ScaleEstimate:
    """The filter's state after an update.

    Attributes:
        factor: multiply the published depth by this to make it metric (1.0 before any observation).
        sigma_log: standard deviation of ``log(factor)`` (0.05 is about +-5 %).
        observations: observations fused since the last :meth:`InstantScale.reset`.
        last_rejection: why the last frame gave no observation (one of :data:`REJECTIONS`), or None when it gave
            one (or was the first reference).
        observation: the last frame's observed factor, or None when it gave none.
    """

    factor: float
    sigma_log: float
    observations: int
    last_rejection: str | None = None
    observation: float | None = None


@dataclass
class _Reference:
    gray: np.ndarray
    corners: np.ndarray  # (N, 1, 2) float32 pixels
    pose: np.ndarray  # T_fixed_camera
    stamp_ns: int


class InstantScale:
    """Metric scale factor of a depth network from tracked points triangulated with odometry; see the module doc.

    Args:
        options: thresholds and noise.
    """

    def __init__(self, options: InstantScaleOptions = InstantScaleOptions()):
        self.options = options
        self.reset()

    def reset(self) -> None:
        """Forget everything: factor 1, no observation, no reference (e.g. after a model swap or a camera change)."""
        self._log_factor, self._variance = 0.0, self.options.initial_sigma ** 2
        self._count = 0
        self._filter_stamp: int | None = None
        self._reference: _Reference | None = None
        self._last_stamp: int | None = None

    @property
    def estimate(self) -> ScaleEstimate:
        """The current factor, σ and observation count (``last_rejection`` None)."""
        return ScaleEstimate(math.exp(self._log_factor), math.sqrt(self._variance), self._count)

    def update(self, gray: np.ndarray, depth: np.ndarray, camera: PinholeCamera, fixed_from_camera: np.ndarray,
               stamp_ns: int) -> ScaleEstimate:
        """Offer one image with the network's depth and the camera pose; fuse an observation if it gives one.

        Args:
            gray: (H, W) uint8 grey image (or (H, W, 3) uint8 RGB, converted), described by ``camera``.
            depth: (h, w) float32 published depth in metres (REP 118, NaN invalid) of this image, *without* this
                filter's factor; any size (sampled at the tracked pixels scaled to it).
            camera: intrinsics of ``gray`` (rectified pinhole).
            fixed_from_camera: (4, 4) ``T_fixed_camera`` of the image (maps optical-frame points into odom/map),
                metres, from the odometry (:mod:`depth_ros.ros.pose_sources`).
            stamp_ns: the image's stamp, integer nanoseconds.

        Returns:
            :class:`ScaleEstimate` after this frame.

        Raises:
            ValueError: an image that is not (H, W) / (H, W, 3) uint8 of the camera's size, or a pose that is not a
                finite 4x4 matrix.
        """
        gray = _gray(gray, camera)
        pose = np.asarray(fixed_from_camera, dtype=np.float64)
        if pose.shape != (4, 4) or not np.isfinite(pose).all():
            raise ValueError(f"camera pose must be a finite 4x4 matrix, got shape {pose.shape}")
        restart = self._check_time(stamp_ns)
        if restart is not None:
            self._reference = None
        if gray.std() < self.options.min_texture:
            return self._result(DARK)
        if self._reference is None:
            self._set_reference(gray, pose, stamp_ns)
            return self._result(restart)
        reference = self._reference
        current_from_reference = relative_pose(pose, reference.pose)  # T_current_reference
        rejection = self._check_motion(current_from_reference, gray, stamp_ns)
        if rejection is not None:
            if rejection not in (NOT_MOVED, FROZEN) or self._reference_expired(stamp_ns):
                self._set_reference(gray, pose, stamp_ns)
            return self._result(rejection)
        tracks = self._track(reference, gray)
        if len(tracks[0]) < self.options.min_tracks:
            self._set_reference(gray, pose, stamp_ns)
            return self._result(FEW_TRACKS)
        log_ratios = self._log_ratios(*tracks, current_from_reference, camera, depth)
        if isinstance(log_ratios, str) and log_ratios == LOW_PARALLAX and not self._reference_expired(stamp_ns):
            return self._result(LOW_PARALLAX)  # the reference waits for more baseline
        self._set_reference(gray, pose, stamp_ns)
        if isinstance(log_ratios, str):
            return self._result(log_ratios)
        return self._fuse(log_ratios, stamp_ns)

    # --- steps ------------------------------------------------------------------------------------------------
    def _check_time(self, stamp_ns: int) -> str | None:
        """Clock jump (time not increasing) or gap since the previous image: the pairing restarts."""
        previous, self._last_stamp = self._last_stamp, stamp_ns
        if previous is None:
            return None
        if stamp_ns <= previous:
            self._filter_stamp = None  # the filter's clock restarts too (no negative process noise)
            return CLOCK_JUMP
        if (stamp_ns - previous) * 1e-9 > self.options.max_gap:
            return GAP
        return None

    def _check_motion(self, current_from_reference: np.ndarray, gray: np.ndarray, stamp_ns: int) -> str | None:
        """Enough translation since the reference, not a jump, not only rotation, and not a frozen image. After a
        jump or a rotation the current image becomes the reference; while the camera has not moved enough, or the
        image is frozen, the reference waits (at most ``max_pair_age``; a camera that turned by ``min_rotation``
        without moving ``min_baseline`` in that time is a pure rotation)."""
        options = self.options
        baseline, angle = motion(current_from_reference)
        if baseline > options.max_baseline:
            return POSE_JUMP
        if baseline < options.min_baseline:  # a rotation of the waiting camera is reported when the wait ends
            return ROTATION if angle >= options.min_rotation and self._reference_expired(stamp_ns) else NOT_MOVED
        if np.abs(gray.astype(np.int16) - self._reference.gray).mean() < 0.5:
            return FROZEN
        return None

    def _reference_expired(self, stamp_ns: int) -> bool:
        return (stamp_ns - self._reference.stamp_ns) * 1e-9 > self.options.max_pair_age

    def _set_reference(self, gray: np.ndarray, pose: np.ndarray, stamp_ns: int) -> None:
        """Make this image (with ``T_fixed_camera`` ``pose``) the reference the next images are paired with."""
        corners = cv2.goodFeaturesToTrack(gray, self.options.max_features, qualityLevel=0.01, minDistance=8,
                                          blockSize=7)
        corners = np.zeros((0, 1, 2), np.float32) if corners is None else corners.astype(np.float32)
        self._reference = _Reference(gray, corners, pose, stamp_ns)

    def _track(self, reference: _Reference, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Reference corners followed into ``gray`` and back: ``(in_reference, in_current)``, (N, 2) float64 px of
        the tracks that passed the forward-backward check."""
        if len(reference.corners) == 0:
            return np.zeros((0, 2)), np.zeros((0, 2))
        window = {"winSize": (21, 21), "maxLevel": 3}
        forward, ok, _ = cv2.calcOpticalFlowPyrLK(reference.gray, gray, reference.corners, None, **window)
        backward, ok_back, _ = cv2.calcOpticalFlowPyrLK(gray, reference.gray, forward, None, **window)
        error = np.linalg.norm((backward - reference.corners).reshape(-1, 2), axis=1)
        inside = np.all((forward >= 0) & (forward <= np.array(gray.shape[::-1]) - 1), axis=2).ravel()
        keep = (ok.ravel() == 1) & (ok_back.ravel() == 1) & (error < self.options.max_fb_error) & inside
        return reference.corners.reshape(-1, 2)[keep].astype(np.float64), forward.reshape(-1, 2)[keep].astype(
            np.float64)

    def _refine_rotation(self, in_reference: np.ndarray, in_current: np.ndarray,
                         reference_from_current: np.ndarray, camera: PinholeCamera) -> np.ndarray:
        """Odometry rotation corrected by the images: ``T_reference_current`` with the rotation that best fits the
        epipolar geometry of the tracks for the odometry's translation direction (Sampson distances, H&Z section
        11.4.3), the odometry rotation being a prior of ``rotation_sigma`` degrees (least squares,
        ``scipy.optimize.least_squares``; twice, each time without the tracks beyond 3 σ of the previous solution:
        corners on occlusion edges move unlike any point).

        The translation length is what odometry measures well; a rotation error between the images (a wandering
        yaw rate, unsynchronised poses) would bias the triangulated depth. The fit needs no depth, so it cannot
        take a depth error for a rotation; a rotation that moves points along the epipolar lines (a pan while
        moving sideways) is not seen by it and stays the odometry's."""
        options = self.options
        inverse_k = np.linalg.inv(camera.K)
        current = np.c_[in_current, np.ones(len(in_current))]
        reference = np.c_[in_reference, np.ones(len(in_reference))]
        rotation, translation = reference_from_current[:3, :3], reference_from_current[:3, 3]
        skew = np.array([[0, -translation[2], translation[1]], [translation[2], 0, -translation[0]],
                         [-translation[1], translation[0], 0]]) / np.linalg.norm(translation)
        prior = 1.0 / math.radians(options.rotation_sigma)
        keep = np.ones(len(current), bool)

        def residuals(x):  # Sampson distances in units of track_noise, then the prior
            corrected = Rotation.from_rotvec(x).as_matrix() @ rotation
            fundamental = inverse_k.T @ skew @ corrected @ inverse_k  # x_reference^T F x_current = 0
            lines_reference, lines_current = current[keep] @ fundamental.T, reference[keep] @ fundamental
            algebraic = np.sum(reference[keep] * lines_reference, axis=1)
            norm = np.sqrt(lines_reference[:, 0] ** 2 + lines_reference[:, 1] ** 2 + lines_current[:, 0] ** 2
                           + lines_current[:, 1] ** 2)
            return np.r_[algebraic / norm / options.track_noise, prior * x]

        solution = np.zeros(3)
        for _ in range(2):  # drop the tracks beyond 3 σ at the current solution, fit the others
            errors = np.abs(residuals(solution)[:-3])
            inliers = errors < 3.0 * max(1.0, 1.4826 * float(np.median(errors)))
            if inliers.sum() < options.min_tracks:
                break
            keep[keep] = inliers
            solution = least_squares(residuals, solution, x_scale=0.01).x
        refined = reference_from_current.copy()
        refined[:3, :3] = Rotation.from_rotvec(solution).as_matrix() @ rotation
        return refined

    def _log_ratios(self, in_reference: np.ndarray, in_current: np.ndarray, current_from_reference: np.ndarray,
                    camera: PinholeCamera, depth: np.ndarray) -> np.ndarray | str:
        """log(triangulated depth / network depth) of the tracks with enough parallax, or a rejection reason."""
        options, k = self.options, camera.K
        z_network = _sample(depth, in_current, camera)
        known = np.isfinite(z_network) & (z_network > 0)
        if known.sum() < options.min_tracks:
            return FEW_TRACKS
        in_reference, in_current, z_network = in_reference[known], in_current[known], z_network[known]
        reference_from_current = self._refine_rotation(in_reference, in_current,
                                                       np.linalg.inv(current_from_reference), camera)
        # where each current corner would be in the reference after the rotation alone (homography K R K^-1)
        rotated = _apply_homography(k @ reference_from_current[:3, :3] @ np.linalg.inv(k), in_current)
        parallax = np.linalg.norm(in_reference - rotated, axis=1)
        if np.median(parallax) < options.min_parallax:
            return LOW_PARALLAX
        homogeneous = cv2.triangulatePoints(k @ np.eye(3, 4), k @ reference_from_current[:3], in_current.T,
                                            in_reference.T)
        with np.errstate(divide="ignore", invalid="ignore"):
            points = homogeneous[:3] / homogeneous[3]
            z_in_reference = reference_from_current[2, :3] @ points + reference_from_current[2, 3]
        valid = (parallax >= options.min_parallax / 2) & (points[2] > 0) & (z_in_reference > 0)
        if valid.sum() < options.min_tracks:
            return FEW_TRACKS
        return np.log(points[2][valid] / z_network[valid])

    def _fuse(self, log_ratios: np.ndarray, stamp_ns: int) -> ScaleEstimate:
        """Kalman update of the log-factor with this frame's median log ratio; its standard deviation is the
        tracks' robust spread, at least ``min_sigma``."""
        options = self.options
        observed = float(np.median(log_ratios))
        spread = 1.4826 * float(np.median(np.abs(log_ratios - observed)))
        noise = max(spread, options.min_sigma) ** 2
        if self._filter_stamp is not None:
            self._variance += options.process_noise ** 2 * max(0.0, (stamp_ns - self._filter_stamp) * 1e-9)
        self._filter_stamp = stamp_ns
        if self._count >= options.gate_after and abs(observed - self._log_factor) > options.gate * math.sqrt(
                self._variance + noise):
            return self._result(OUTLIER)  # the variance grew meanwhile: a lasting change gets through in time
        gain = self._variance / (self._variance + noise)
        self._log_factor += gain * (observed - self._log_factor)
        self._variance *= 1.0 - gain
        self._count += 1
        return ScaleEstimate(math.exp(self._log_factor), math.sqrt(self._variance), self._count, None,
                             math.exp(observed))

    def _result(self, rejection: str | None) -> ScaleEstimate:
        return ScaleEstimate(math.exp(self._log_factor), math.sqrt(self._variance), self._count, rejection)


def _gray(image: np.ndarray, camera: PinholeCamera) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"image must be (H, W) or (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if image.shape[:2] != (camera.height, camera.width):
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} px, its camera {camera.width}x{camera.height}")
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else np.ascontiguousarray(image)


def _apply_homography(homography: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    mapped = np.c_[pixels, np.ones(len(pixels))] @ homography.T
    return mapped[:, :2] / mapped[:, 2:3]


def _project(camera: PinholeCamera, points: np.ndarray) -> np.ndarray:
    """(N, 3) optical-frame points -> (N, 2) pixels (no validity check: the callers keep points in front)."""
    return np.c_[camera.fx * points[:, 0] / points[:, 2] + camera.cx, camera.fy * points[:, 1] / points[:, 2]
                 + camera.cy]


def _sample(depth: np.ndarray, pixels: np.ndarray, camera: PinholeCamera) -> np.ndarray:
    """Depth at image pixels (nearest), for a depth map of any size covering the same field of view."""
    height, width = depth.shape
    scaled = camera.resized(width, height)
    columns = np.rint((pixels[:, 0] - camera.cx) * scaled.fx / camera.fx + scaled.cx).astype(int)
    rows = np.rint((pixels[:, 1] - camera.cy) * scaled.fy / camera.fy + scaled.cy).astype(int)
    inside = (columns >= 0) & (columns < width) & (rows >= 0) & (rows < height)
    values = np.full(len(pixels), np.nan, np.float64)
    values[inside] = depth[rows[inside], columns[inside]]
    return values
