"""InstantScale (depth_ros.scale_filter) on a synthetic room with known depth: observations equal the true depth
ratio, bad frames are rejected with their reason, and a clock jump restarts the pairing without a stuck state."""

import math

import cv2
import numpy as np
import pytest

from depth_ros.geometry.camera import PinholeCamera
from depth_ros.geometry.transform import pose_matrix
from depth_ros.scale_filter import (
    CLOCK_JUMP,
    DARK,
    FROZEN,
    GAP,
    NOT_MOVED,
    POSE_JUMP,
    ROTATION,
    InstantScale,
)

CAMERA = PinholeCamera(fx=400.0, fy=400.0, cx=159.5, cy=119.5, width=320, height=240)
# the room's planes n . X = d in world coordinates (z up); the camera looks along world +x
PLANES = [((1.0, 0, 0), 4.0), ((0, 1.0, 0), 1.5), ((0, -1.0, 0), 1.5), ((0, 0, -1.0), 0.8), ((0, 0, 1.0), 1.8)]
OPTICAL_IN_BASE = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1.0]])  # REP 103 optical frame
TOO_FAR = 1.3  # the "network" depth is the true depth x 1.3


def _texture():
    noise = (np.random.default_rng(0).random((1024, 1024)) * 255).astype(np.float32)
    return cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 1.5), None, 0, 255, cv2.NORM_MINMAX)


TEXTURE = _texture()


def camera_pose(x: float, y: float = 0.0, yaw_deg: float = 0.0) -> np.ndarray:
    """T_world_camera of a camera at (x, y) turned by ``yaw_deg`` about world z."""
    return pose_matrix([x, y, 0, 0, 0, math.radians(yaw_deg)]) @ OPTICAL_IN_BASE


def render(world_from_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(grey uint8, depth float32 m) of the textured room seen from ``world_from_camera``: exact depth."""
    v, u = np.mgrid[0:CAMERA.height, 0:CAMERA.width].astype(np.float64)
    rays = np.stack([(u - CAMERA.cx) / CAMERA.fx, (v - CAMERA.cy) / CAMERA.fy, np.ones_like(u)], -1)
    centre, directions = world_from_camera[:3, 3], rays @ world_from_camera[:3, :3].T
    depth, coordinates = np.full(u.shape, np.inf), np.zeros(u.shape + (2,))
    for normal, distance in PLANES:
        normal = np.asarray(normal)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (distance - centre @ normal) / (directions @ normal)  # optical depth: the rays have z = 1
        hit = (z > 0.05) & (z < depth)
        points = centre + directions * z[..., None]
        axes = [i for i in range(3) if normal[i] == 0]
        depth = np.where(hit, z, depth)
        coordinates = np.where(hit[..., None], points[..., axes] * 150.0 + 512.0, coordinates)
    gray = cv2.remap(TEXTURE, *(c.astype(np.float32) % 1024 for c in np.moveaxis(coordinates, -1, 0)),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    return gray.astype(np.uint8), depth.astype(np.float32)


def drive(instant, poses, start_s=0.0, odometry=None):
    """Offer the rendered views at 30 Hz; returns the estimates. ``odometry``: the poses given to the filter."""
    estimates = []
    for i, pose in enumerate(poses):
        gray, depth = render(pose)
        given = pose if odometry is None else odometry[i]
        estimates.append(instant.update(gray, depth * TOO_FAR, CAMERA, given, round((start_s + i / 30) * 1e9)))
    return estimates


FORWARD = [camera_pose(0.02 * i, 0.0, 0.3 * i) for i in range(24)]  # 0.6 m/s, turning at 9 deg/s


def test_observations_equal_the_true_depth_ratio_and_the_factor_converges():
    instant = InstantScale()
    estimates = drive(instant, FORWARD)
    observed = [e.observation for e in estimates if e.observation is not None]
    assert len(observed) >= 5
    np.testing.assert_allclose(observed, 1 / TOO_FAR, rtol=0.02)
    final = estimates[-1]
    assert final.factor == pytest.approx(1 / TOO_FAR, rel=0.02) and final.observations == len(observed)
    assert 0 < final.sigma_log < 0.1


def test_an_odometry_rotation_error_is_corrected_by_the_images():
    turned = [pose @ pose_matrix([0, 0, 0, 0, math.radians(0.1 * i), 0]) for i, pose in enumerate(FORWARD)]
    estimates = drive(InstantScale(), FORWARD, odometry=turned)  # 3 deg/s of yaw-rate error about optical y
    observed = [e.observation for e in estimates if e.observation is not None]
    assert len(observed) >= 5
    np.testing.assert_allclose(observed, 1 / TOO_FAR, rtol=0.03)


def test_bad_frames_are_rejected_with_their_reason():
    instant = InstantScale()
    gray, depth = render(FORWARD[0])
    assert instant.update(gray, depth, CAMERA, FORWARD[0], 0).last_rejection is None  # the first reference
    assert instant.update(np.zeros_like(gray), depth, CAMERA, FORWARD[4], 33_000_000).last_rejection == DARK
    assert instant.update(gray, depth, CAMERA, FORWARD[0], 66_000_000).last_rejection == NOT_MOVED
    assert instant.update(gray, depth, CAMERA, FORWARD[4], 100_000_000).last_rejection == FROZEN
    jumped = camera_pose(2.0)
    assert instant.update(*render(jumped), CAMERA, jumped, 133_000_000).last_rejection == POSE_JUMP
    assert instant.update(*render(jumped), CAMERA, jumped, 900_000_000).last_rejection == GAP
    turning = [camera_pose(2.0, 0.0, 2.0 * i) for i in range(1, 40)]  # 60 deg/s in place for 1.3 s
    reasons = {e.last_rejection for e in drive(instant, turning, start_s=0.93)}
    assert ROTATION in reasons and instant.estimate.observations == 0
    with pytest.raises(ValueError, match="uint8"):
        instant.update(gray.astype(np.float32), depth, CAMERA, FORWARD[0], 2_000_000_000)
    with pytest.raises(ValueError, match="4x4"):
        instant.update(gray, depth, CAMERA, np.full((4, 4), np.nan), 2_000_000_000)


def test_a_clock_jump_restarts_the_pairing_and_observations_go_on():
    instant = InstantScale()
    first = drive(instant, FORWARD)[-1]
    looped = drive(instant, FORWARD, start_s=-100.0)  # a looped bag: the stamps start again, earlier
    assert looped[0].last_rejection == CLOCK_JUMP
    assert looped[0].factor == pytest.approx(first.factor)  # camera and network did not change
    assert looped[-1].observations > first.observations  # not stuck
    assert looped[-1].factor == pytest.approx(1 / TOO_FAR, rel=0.02)
    instant.reset()
    assert instant.estimate.factor == 1.0 and instant.estimate.observations == 0


def test_real_frames_with_odometry_converge_to_the_sensor_depth_scale(shared_data):
    """7-Scenes RedKitchen 450-599 (5 s, handheld, mostly sideways), ground-truth poses as odometry, the colour
    camera's 525 px focal, the sensor depth x 1.3 as the "network" depth: the factor ends near 1/1.3."""
    from dataclasses import replace

    from depth_ros.data.tum import TumRGBD
    from depth_ros.geometry.transform import PoseTrajectory

    folder = shared_data / "7scenes_redkitchen_odom" / "tum"
    sequence, trajectory = TumRGBD(folder), PoseTrajectory.from_tum_file(folder / "groundtruth.txt")
    camera = replace(sequence.camera, fx=525.0, fy=525.0)
    instant = InstantScale()
    for index in range(450, 600):
        frame = sequence[index]
        depth = np.where(frame.depth > 0, frame.depth * TOO_FAR, np.nan).astype(np.float32)
        estimate = instant.update(frame.rgb, depth, camera, trajectory.at(frame.stamp), frame.stamp_ns)
    assert estimate.observations >= 15
    assert estimate.factor == pytest.approx(1 / TOO_FAR, rel=0.07)  # from 1.0, 30 % off; measured 1.05x
