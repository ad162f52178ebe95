"""Live camera poses (depth_ros.ros.pose_sources): tf2, and odometry x the camera extrinsic, on real 7-Scenes
camera poses."""

from types import SimpleNamespace

import numpy as np
import pytest

from depth_ros.data.tum import TumRGBD
from depth_ros.geometry.transform import (
    PoseLookupError,
    PoseTrajectory,
    invert_transform,
    pose_matrix,
    translation_quaternion,
)
from depth_ros.ros.pose_sources import TIME_JUMP, OdometryPoses, StaticPose, TfPoses

S = 1_000_000_000


@pytest.fixture(scope="module")
def kitchen(shared_data):
    folder = shared_data / "7scenes_redkitchen_odom" / "tum"
    return folder, PoseTrajectory.from_tum_file(folder / "groundtruth.txt")


class _Tf2Buffer:
    """The two tf2_ros.Buffer calls TfPoses makes, over one known trajectory of the camera frame (tf2_ros has no pip
    wheel, so the nodes' tf2 path is exercised with this stand-in)."""

    def __init__(self, trajectory: PoseTrajectory, fixed: str, camera: str):
        self.trajectory, self.fixed, self.camera = trajectory, fixed, camera

    def can_transform(self, target, source, time) -> bool:
        return (target, source) == (self.fixed, self.camera) and self.trajectory.covers([time.nanoseconds * 1e-9])[0]

    def lookup_transform(self, target, source, time, timeout=None):
        from geometry_msgs.msg import TransformStamped

        stamp = time.nanoseconds * 1e-9
        if (target, source) != (self.fixed, self.camera) or not self.trajectory.covers([stamp])[0]:
            raise LookupError(f"no {target} -> {source} at {stamp}")  # tf2_ros raises its TransformException kinds
        translation, quaternion = translation_quaternion(self.trajectory.at(stamp))
        msg = TransformStamped()
        msg.header.frame_id, msg.child_frame_id = target, source
        (msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z) = translation
        (msg.transform.rotation.x, msg.transform.rotation.y, msg.transform.rotation.z,
         msg.transform.rotation.w) = quaternion
        return msg


def test_tf2_pose_source_gives_the_camera_pose_at_the_image_stamp(kitchen):
    folder, trajectory = kitchen
    poses = TfPoses(_Tf2Buffer(trajectory, "odom", "camera_optical_frame"), "odom")
    stamp = TumRGBD(folder)[301].stamp + 0.01  # between two pose samples: interpolated
    assert poses.ready("camera_optical_frame", round(stamp * 1e9)) and not poses.ready("camera_link", 0)
    pose = poses.pose("camera_optical_frame", round(stamp * 1e9))
    assert pose.shape == (4, 4) and abs(pose - trajectory.at(stamp)).max() < 1e-6
    with pytest.raises(PoseLookupError, match="tf2 has no odom -> camera_link"):
        poses.pose("camera_link", round(stamp * 1e9))
    with pytest.raises(PoseLookupError, match="tf2 has no odom -> camera_optical_frame at 1.000"):
        poses.pose("camera_optical_frame", 10**9)


def _tf_static(parent: str, child: str, matrix: np.ndarray):
    """A tf2_msgs/TFMessage-like message (no pip wheel of tf2_msgs) with one geometry_msgs/TransformStamped."""
    from geometry_msgs.msg import TransformStamped

    msg = TransformStamped()
    msg.header.frame_id, msg.child_frame_id = parent, child
    translation, quaternion = translation_quaternion(matrix)
    (msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z) = translation
    (msg.transform.rotation.x, msg.transform.rotation.y, msg.transform.rotation.z,
     msg.transform.rotation.w) = quaternion
    return SimpleNamespace(transforms=[msg])


def test_odometry_times_the_extrinsic_gives_the_camera_pose_between_samples(kitchen):
    _, trajectory = kitchen
    base_from_camera = pose_matrix([0.1, 0.0, 0.3, -np.pi / 2, 0.0, -np.pi / 2])
    fallback = pose_matrix([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    poses = OdometryPoses(fallback, tolerance=0.05)
    stamps = trajectory.stamps[300:330]
    for stamp in stamps:  # odometry of the base whose camera moved as recorded
        poses.add(round(stamp * S), trajectory.at(stamp) @ invert_transform(base_from_camera), "base_link")
    between = (stamps[10] + stamps[11]) / 2
    assert poses.ready("camera_optical_frame", round(between * S))
    assert not poses.ready("camera_optical_frame", round((stamps[-1] + 0.01) * S))  # waits for newer odometry
    guess = poses.pose("camera_optical_frame", round(between * S))  # no /tf_static yet: the fallback extrinsic
    np.testing.assert_allclose(guess, trajectory.at(between) @ invert_transform(base_from_camera) @ fallback,
                               atol=1e-5)  # the base interpolated instead of the camera: equal to ~1e-7
    poses.add_static(_tf_static("base_link", "camera_optical_frame", base_from_camera))
    np.testing.assert_allclose(poses.pose("camera_optical_frame", round(between * S)), trajectory.at(between),
                               atol=1e-3)  # odometry interpolated, then the extrinsic: the camera's own pose
    with pytest.raises(PoseLookupError, match="no odom -> base_link pose at"):
        poses.pose("camera_optical_frame", round((stamps[0] - 1.0) * S))


def test_odometry_rejects_a_repeated_stamp_and_restarts_after_a_clock_jump():
    poses = OdometryPoses(np.eye(4), tolerance=0.05)
    assert not poses.ready("camera", 0)
    with pytest.raises(PoseLookupError, match="no odometry yet"):
        poses.pose("camera", 0)
    assert poses.add(100 * S, np.eye(4), "base_link") is False
    with pytest.raises(ValueError, match="is not after the previous"):
        poses.add(100 * S - 1000, np.eye(4), "base_link")
    moved = pose_matrix([1.0, 0, 0, 0, 0, 0])
    assert poses.add(round((100 - 2 * TIME_JUMP) * S), moved, "base_link") is True  # a looped bag
    np.testing.assert_allclose(poses.pose("camera", round((100 - 2 * TIME_JUMP) * S)), moved)
    assert not poses.ready("camera", 100 * S)  # the old future is gone


def test_a_static_pose_is_the_same_at_every_stamp():
    mount = pose_matrix([0.2, 0.0, 0.5, -np.pi / 2, 0.0, -np.pi / 2])
    poses = StaticPose(mount, "base_link")
    assert poses.ready("any", 0) and np.array_equal(poses.pose("camera", 123 * S), mount)
