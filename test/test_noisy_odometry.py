"""noisy_odometry (depth_ros.tools.noisy_odometry): the perturbation itself, and the bag copy of the real 7-Scenes
bag (its /odom and /tf perturbed alike, everything else byte for byte)."""

import numpy as np
import pytest

from depth_ros.data.rosbag import BagReader
from depth_ros.geometry.transform import motion, pose_matrix, pose_msg_to_matrix, relative_pose
from depth_ros.tools.noisy_odometry import main, noisy_odometry, perturb_trajectory


def _straight_drive(count=301, speed=0.5, rate=30.0):
    """A base driving along x at ``speed`` m/s, turning at 10 deg/s about z."""
    stamps = np.arange(count) / rate
    poses = np.stack([pose_matrix([speed * t, 0, 0, 0, 0, np.radians(10) * t]) for t in stamps])
    return stamps, poses


def _path_length(poses):
    return sum(motion(step)[0] for step in relative_pose(poses[:-1], poses[1:]))


def _heading(pose):
    return np.degrees(np.arctan2(pose[1, 0], pose[0, 0]))


def test_translation_increments_are_scaled_and_rotation_kept_without_yaw_error():
    stamps, poses = _straight_drive()
    noisy = perturb_trajectory(stamps, poses, translation_error=0.03)
    assert _path_length(noisy) == pytest.approx(1.03 * _path_length(poses), rel=1e-9)
    np.testing.assert_allclose(noisy[:, :3, :3], poses[:, :3, :3], atol=1e-12)
    np.testing.assert_allclose(noisy[0], poses[0])


def test_yaw_rate_error_wanders_by_its_size_and_is_seeded():
    stamps, poses = _straight_drive()
    noisy = perturb_trajectory(stamps, poses, yaw_rate_error=2.0, seed=3)
    np.testing.assert_allclose(noisy, perturb_trajectory(stamps, poses, yaw_rate_error=2.0, seed=3))
    assert not np.allclose(noisy, perturb_trajectory(stamps, poses, yaw_rate_error=2.0, seed=4))
    drift = _heading(noisy[-1]) - _heading(poses[-1])  # 10 s at ~2 deg/s of error
    assert 1.0 < abs(drift) < 80.0
    assert _path_length(noisy) == pytest.approx(_path_length(poses), rel=1e-9)  # the distance stays right
    heights = noisy[:, 2, 3]
    np.testing.assert_allclose(heights, 0.0, atol=1e-9)  # yaw about the body's up axis keeps a ground robot flat


def test_bad_trajectories_are_refused():
    stamps, poses = _straight_drive(5)
    with pytest.raises(ValueError, match="increase"):
        perturb_trajectory(stamps[::-1], poses)
    with pytest.raises(ValueError, match="poses"):
        perturb_trajectory(stamps[:3], poses)


@pytest.fixture(scope="module")
def noisy_bag(shared_data, tmp_path_factory):
    source = shared_data / "7scenes_redkitchen_odom" / "bag"
    output = tmp_path_factory.mktemp("noisy") / "noisy"
    assert noisy_odometry(source, output, translation_error=0.03, yaw_rate_error=2.0, seed=1) == 600
    return source, output


def _odometry(path):
    with BagReader(path) as bag:
        odom = np.stack([pose_msg_to_matrix(msg) for _, _, msg in bag.topic_messages("/odom")])
        tf = np.stack([pose_msg_to_matrix(msg.transforms[0]) for _, _, msg in bag.topic_messages("/tf")])
        twist = np.array([msg.twist.twist.linear.x for _, _, msg in bag.topic_messages("/odom")])
    return odom, tf, twist


def test_the_bag_copy_perturbs_odom_and_tf_alike_and_copies_the_rest(noisy_bag):
    source, output = noisy_bag
    odom, tf, twist = _odometry(source)
    noisy_odom, noisy_tf, noisy_twist = _odometry(output)
    np.testing.assert_allclose(noisy_tf, noisy_odom, atol=1e-9)
    assert _path_length(noisy_odom) == pytest.approx(1.03 * _path_length(odom), rel=1e-6)
    np.testing.assert_allclose(noisy_twist, 1.03 * twist, rtol=1e-9)
    turned = motion(relative_pose(odom[-1], noisy_odom[-1]))[1]
    assert turned > 0.5  # 20 s of a wandering 2 deg/s error
    with BagReader(source) as before, BagReader(output) as after:
        counts = {c.topic: c.msgcount for c in before.reader.connections}
        assert {c.topic: c.msgcount for c in after.reader.connections} == counts
        images = before.connections("/camera/color/image_raw/compressed")
        copied = after.connections("/camera/color/image_raw/compressed")
        assert [(t, bytes(raw)) for _, t, raw in before.raw_messages(images)] \
            == [(t, bytes(raw)) for _, t, raw in after.raw_messages(copied)]
        static = after.connections("/tf_static")[0]
        assert "TRANSIENT_LOCAL" in str(static.ext.offered_qos_profiles)


def test_cli_refuses_an_existing_output_with_one_line(noisy_bag, capsys):
    source, output = noisy_bag
    assert main([str(source), str(output), "--translation-error", "0.03"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("noisy_odometry: error: ") and "already exists" in error and "\n" not in error
    assert main([str(source), str(output.parent / "other"), "--odom-topic", "/nothing"]) == 1
    assert "no topic '/nothing'" in capsys.readouterr().err
    assert not (output.parent / "other").exists() and [p.name for p in output.parent.iterdir()] == ["noisy"]
