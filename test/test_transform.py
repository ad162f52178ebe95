"""SE(3) algebra and pose interpolation (depth_ros.geometry.transform) on real 7-Scenes poses."""

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from depth_ros.geometry.transform import (
    PoseLookupError,
    PoseTrajectory,
    format_tum_line,
    invert_transform,
    motion,
    parse_tum_line,
    pose_matrix,
    relative_pose,
    transform_matrix,
    translation_quaternion,
)
from depth_ros.stamps import nearest_index


def _pose(x, yaw_deg):
    return transform_matrix((x, 0.5 * x, -x), Rotation.from_euler("z", yaw_deg, degrees=True).as_quat())


def test_relative_pose_maps_target_points_into_the_source_frame():
    world_from_source, world_from_target = _pose(0.3, 10), _pose(-0.2, -35)
    source_from_target = relative_pose(world_from_source, world_from_target)
    point_target = np.array([0.4, -0.1, 2.0, 1.0])
    np.testing.assert_allclose(source_from_target @ point_target,
                               invert_transform(world_from_source) @ world_from_target @ point_target, atol=1e-12)
    batch = relative_pose(np.stack([world_from_source] * 3), np.stack([world_from_target] * 3))
    np.testing.assert_allclose(batch, np.stack([source_from_target] * 3), atol=1e-12)


def test_motion_reports_metres_and_degrees():
    translation, angle = motion(relative_pose(_pose(0.0, 0), _pose(0.1, 30)))
    assert translation == pytest.approx(math.sqrt(0.01 + 0.0025 + 0.01))
    assert angle == pytest.approx(30.0)


def test_translation_quaternion_round_trip_and_euler_pose():
    matrix = pose_matrix([0.1, -0.2, 0.5, 0.3, -0.4, 1.2])
    np.testing.assert_allclose(transform_matrix(*translation_quaternion(matrix)), matrix, atol=1e-12)
    with pytest.raises(ValueError, match="6 finite"):
        pose_matrix([0, 0, math.nan, 0, 0, 0])


def test_tum_line_round_trip_and_errors():
    stamp, matrix = parse_tum_line("1700000000.5 0.1 0.2 0.3 0 0 0.7071068 0.7071068")
    assert stamp == 1700000000.5
    again_stamp, again = parse_tum_line(format_tum_line(stamp, matrix))
    assert again_stamp == stamp
    np.testing.assert_allclose(again, matrix, atol=1e-8)
    with pytest.raises(ValueError, match="timestamp tx ty tz"):
        parse_tum_line("1.0 2.0 three")


def test_interpolation_is_exact_at_the_ends_and_the_midpoint():
    start, end = _pose(0.0, 0), _pose(0.2, 40)
    trajectory = PoseTrajectory([10.0, 11.0], [start, end], max_gap=None)
    np.testing.assert_allclose(trajectory.at(10.0), start, atol=1e-12)
    np.testing.assert_allclose(trajectory.at(11.0), end, atol=1e-12)
    middle = trajectory.at(10.5)
    np.testing.assert_allclose(middle[:3, 3], (start[:3, 3] + end[:3, 3]) / 2, atol=1e-12)
    np.testing.assert_allclose(middle[:3, :3], Rotation.from_euler("z", 20, degrees=True).as_matrix(), atol=1e-12)


def test_lookup_outside_the_trajectory_or_in_a_gap_is_a_clear_error():
    trajectory = PoseTrajectory([0.0, 0.1, 5.0], [_pose(0, 0)] * 3, parent="odom", child="base_link",
                                tolerance=0.02, max_gap=0.5)
    np.testing.assert_allclose(trajectory.at([-0.01, 0.11, 4.99]), np.stack([_pose(0, 0)] * 3), atol=1e-12)
    assert trajectory.covers([-0.05, 0.05, 1.0, 5.01, 5.5]).tolist() == [False, True, False, True, False]
    with pytest.raises(PoseLookupError, match=r"no odom -> base_link pose at 1\.000000 s"):
        trajectory.at([0.05, 1.0])
    with pytest.raises(ValueError, match="two poses at stamp"):
        PoseTrajectory([1.0, 1.0], [_pose(0, 0)] * 2)


def test_tum_groundtruth_trajectory_matches_the_per_frame_pose_files(shared_data):
    folder = shared_data / "7scenes_redkitchen"
    trajectory = PoseTrajectory.from_tum_file(folder / "groundtruth_tum.txt")
    assert len(trajectory) == 100
    frame = 3 * 17  # every 3rd frame of the original sequence, t = index / 30 s
    expected = np.loadtxt(folder / "frames" / f"frame-{frame:06d}.pose.txt")
    pose = trajectory.at(trajectory.stamps[17])
    np.testing.assert_allclose(pose[:3, 3], expected[:3, 3], atol=1e-6)
    np.testing.assert_allclose(pose[:3, :3], expected[:3, :3], atol=2e-4)  # the files' rotations are not orthonormal


def test_attached_frame_composes_on_the_right():
    offset = pose_matrix([0.1, 0.0, 0.5, -math.pi / 2, 0.0, -math.pi / 2])
    trajectory = PoseTrajectory([0.0, 1.0], [_pose(0, 0), _pose(1.0, 90)], max_gap=2.0)
    np.testing.assert_allclose(trajectory.attached(offset).at(0.5), trajectory.at(0.5) @ offset, atol=1e-12)


def test_nearest_index_takes_the_closest_stamp_within_tolerance():
    stamps = np.array([0.0, 1.0, 2.0])
    assert nearest_index(stamps, 1.4, 0.5) == 1
    assert nearest_index(stamps, 1.6, 0.5) == 2
    assert nearest_index(stamps, 1.5, 0.5) == 1  # a tie goes to the earlier stamp
    assert nearest_index(stamps, 2.6, 0.5) is None
    assert nearest_index(np.array([]), 0.0, 1.0) is None
