"""Temporal fusion (depth_ros.fusion): forward warping with known motion, inverse-variance fusion, per-pixel and
whole-state resets."""

import numpy as np
import pytest

from depth_ros.fusion import FusionOptions, TemporalFusion, forward_warp
from depth_ros.geometry.camera import PinholeCamera
from depth_ros.geometry.transform import pose_matrix

CAMERA = PinholeCamera(fx=100.0, fy=100.0, cx=40.0, cy=30.0, width=80, height=60)
MS = 1_000_000


def moved(z: float) -> np.ndarray:
    """T_world_camera of a camera z metres forward along its optical axis."""
    return pose_matrix((0.0, 0.0, z, 0.0, 0.0, 0.0))


def test_forward_warp_of_a_wall_with_the_camera_moving_towards_it():
    wall = np.full((60, 80), 2.0, np.float32)
    sigma = np.full_like(wall, 0.2)
    motion = np.linalg.inv(moved(0.5)) @ moved(0.0)  # T_current_previous
    depth, warped_sigma = forward_warp(wall, sigma, CAMERA, motion)
    inner = depth[10:50, 10:70]
    np.testing.assert_allclose(inner[np.isfinite(inner)], 1.5, rtol=1e-5)
    assert np.isfinite(inner).mean() > 0.5  # approaching spreads the points: some holes
    np.testing.assert_allclose(warped_sigma[np.isfinite(depth)], 0.15, rtol=1e-5)  # relative sigma kept
    assert np.isnan(depth[0, 0])  # the border of the new view saw nothing


def test_static_camera_fuses_two_noisy_frames_by_inverse_variance():
    rng = np.random.default_rng(0)
    truth = np.full((60, 80), 2.0, np.float32)
    sigma = np.full_like(truth, 0.05)
    fusion = TemporalFusion(FusionOptions(process_noise=0.0))
    frames = [truth + rng.normal(0, 0.05, truth.shape).astype(np.float32) for _ in range(4)]
    for i, frame in enumerate(frames):
        fused, fused_sigma = fusion.update(frame, sigma, CAMERA, (i + 1) * 33 * MS, moved(0.0), "m")
        assert fusion.last_reset == ("first frame" if i == 0 else "")
    agreeing = np.abs(fused - np.mean(frames, axis=0)) < 1e-4
    assert agreeing.mean() > 0.95  # almost every pixel is the mean of the 4 frames
    np.testing.assert_allclose(fused_sigma[agreeing], 0.05 / 2, rtol=1e-4)
    assert np.abs(fused - truth).mean() < 0.6 * np.abs(frames[-1] - truth).mean()


def test_a_moving_object_restarts_its_pixels_and_motion_is_compensated():
    fusion = TemporalFusion(FusionOptions(process_noise=0.0))
    sigma = np.full((60, 80), 0.02, np.float32)
    fusion.update(np.full((60, 80), 2.0, np.float32), sigma, CAMERA, 33 * MS, moved(0.0), "m")
    current = np.full((60, 80), 1.9, np.float32)  # the camera moved 0.1 m forward
    current[20:40, 30:50] = 1.0  # an object came in
    fused, fused_sigma = fusion.update(current, sigma, CAMERA, 66 * MS, moved(0.1), "m")
    assert (fused[20:40, 30:50] == 1.0).all() and (fused_sigma[20:40, 30:50] == 0.02).all()
    fused_wall = fused_sigma[5:15, 5:75] < 0.02
    assert fused_wall.mean() > 0.5 and np.allclose(fused[5:15, 5:75][fused_wall], 1.9, atol=1e-4)


@pytest.mark.parametrize(("change", "reason"), [
    ({"stamp_ns": 20 * MS}, "clock jump"), ({"stamp_ns": 2000 * MS}, "max_gap"), ({"model": "other"}, "model"),
    ({"camera": CAMERA.resized(40, 30)}, "camera"), ({"world_from_camera": None}, "no camera pose")])
def test_the_state_restarts_on_a_clock_jump_gap_model_swap_camera_change_or_missing_pose(change, reason):
    fusion = TemporalFusion()
    fusion.update(np.full((60, 80), 2.0, np.float32), np.full((60, 80), 0.1, np.float32), CAMERA, 33 * MS,
                  moved(0.0), "m")
    camera = change.get("camera", CAMERA)
    shape = (camera.height, camera.width)
    depth, sigma = np.full(shape, 2.05, np.float32), np.full(shape, 0.1, np.float32)
    arguments = {"stamp_ns": 66 * MS, "world_from_camera": moved(0.0), "model": "m", **change, "camera": camera}
    fused, fused_sigma = fusion.update(depth, sigma, **arguments)
    assert reason in fusion.last_reset
    np.testing.assert_array_equal(fused, depth)
    np.testing.assert_array_equal(fused_sigma, sigma)
