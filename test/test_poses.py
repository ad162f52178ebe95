"""Camera trajectories from the real odometry bag (7-Scenes RedKitchen recorded as a robot would): odometry +
/tf_static, the TF chain and pose topics all give the TUM ground truth at the image stamps."""

from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from scipy.spatial.transform import Rotation

from depth_ros.data.poses import PoseSource, load_camera_trajectory
from depth_ros.data.rosbag import BagReader
from depth_ros.geometry.tf_tree import TransformChain
from depth_ros.geometry.transform import PoseLookupError, PoseTrajectory, relative_pose

ODOM = "7scenes_redkitchen_odom"
IMAGE_TOPIC = "/camera/color/image_raw/compressed"
# docs/depth_node.md: base_link -> camera_optical_frame (0.10, 0, 0.50) m; optical z = base x, x = -base y, y = -base z
CAMERA_TO_BASE = [0.10, 0.0, 0.50, -np.pi / 2, 0.0, -np.pi / 2]
STORE = get_typestore(Stores.ROS2_HUMBLE)


@pytest.fixture(scope="module")
def odom(shared_data) -> dict:
    """The bag, its image stamps (600) and frame_id, and the ground-truth camera poses at those stamps."""
    bag = shared_data / ODOM / "bag"
    with BagReader(bag) as reader:
        refs = reader.index(IMAGE_TOPIC)
        frame_id = reader.read(refs[0]).header.frame_id
        odometry = [msg for _, _, msg in reader.topic_messages("/odom")]
        tf_static = [(time_ns, raw) for _, time_ns, raw in reader.raw_messages(reader.connections("/tf_static"))]
    stamps = np.array([ref.stamp for ref in refs])
    truth = PoseTrajectory.from_tum_file(shared_data / ODOM / "tum" / "groundtruth.txt")
    np.testing.assert_allclose(truth.stamps, stamps, rtol=0, atol=1e-6)  # one ground-truth pose per image
    return {"bag": bag, "stamps": stamps, "frame_id": frame_id, "truth": truth.at(stamps), "odometry": odometry,
            "tf_static": tf_static}


def assert_poses_equal(poses: np.ndarray, truth: np.ndarray, metres: float = 1e-3, degrees: float = 0.1) -> None:
    """Every pose within ``metres`` and ``degrees`` of the ground truth."""
    assert poses.shape == truth.shape
    offsets = relative_pose(truth, poses)
    assert np.linalg.norm(offsets[:, :3, 3], axis=1).max() < metres
    assert np.degrees(Rotation.from_matrix(offsets[:, :3, :3]).magnitude()).max() < degrees


def test_odometry_and_tf_static_give_the_ground_truth_camera_poses(odom):
    trajectory = load_camera_trajectory(odom["bag"], PoseSource("odometry"), odom["frame_id"])
    assert odom["frame_id"] == "camera_optical_frame"
    assert isinstance(trajectory, PoseTrajectory) and (trajectory.parent, trajectory.child) == (
        "odom", "camera_optical_frame")
    assert trajectory.covers(odom["stamps"]).all()
    assert_poses_equal(trajectory.at(odom["stamps"]), odom["truth"])
    base = load_camera_trajectory(odom["bag"], PoseSource("odometry", camera_frame="base_link"))
    distance = np.linalg.norm(base.at(odom["stamps"])[:, :3, 3] - odom["truth"][:, :3, 3], axis=1)
    np.testing.assert_allclose(distance, np.hypot(0.10, 0.50), atol=1e-4)  # the camera is 0.51 m from the base


def test_tf_chain_gives_the_ground_truth_camera_poses_and_inverts_when_walking_up(odom):
    chain = load_camera_trajectory(odom["bag"], PoseSource("tf", fixed_frame="odom"), odom["frame_id"])
    assert isinstance(chain, TransformChain) and (chain.parent, chain.child) == ("odom", "camera_optical_frame")
    assert_poses_equal(chain.at(odom["stamps"]), odom["truth"])
    # camera -> odom walks up both edges: the inverse poses
    inverse = load_camera_trajectory(odom["bag"], PoseSource("tf", fixed_frame="camera_optical_frame"), "odom")
    assert_poses_equal(inverse.at(odom["stamps"]), relative_pose(odom["truth"], np.eye(4)))
    with pytest.raises(ValueError, match=r"no TF path from 'odom' to 'laser'.*odom -> base_link"):
        load_camera_trajectory(odom["bag"], PoseSource("tf", fixed_frame="odom"), "laser")


def test_a_stamp_outside_the_odometry_has_no_pose_and_the_error_names_it(odom):
    late = odom["stamps"][-1] + 1.0
    trajectory = load_camera_trajectory(odom["bag"], PoseSource("odometry"), odom["frame_id"])
    assert not trajectory.covers([late])[0]
    with pytest.raises(PoseLookupError, match=rf"no odom -> camera_optical_frame pose at {late:.6f} s"):
        trajectory.at(np.append(odom["stamps"], late))
    chain = load_camera_trajectory(odom["bag"], PoseSource("tf", fixed_frame="odom"), odom["frame_id"])
    assert list(chain.covers([odom["stamps"][0], late])) == [True, False]
    with pytest.raises(PoseLookupError, match=rf"odom -> camera_optical_frame \(TF chain\): no odom -> base_link "
                                              rf"pose at {late:.6f} s"):
        chain.at(late)


def _write_pose_bag(path: Path, odom: dict, msgtype: str, tf_static: bool) -> Path:
    """The odometry's base poses as a PoseStamped / PoseWithCovarianceStamped topic ``/pose``; with ``tf_static``
    the extrinsic as a chain base_link -> camera_link -> camera_optical_frame (the bag's transform, split)."""
    types = STORE.types
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        poses = writer.add_connection("/pose", msgtype, typestore=STORE)
        for msg in odom["odometry"]:
            pose = msg.pose.pose if msgtype.endswith("/PoseStamped") else msg.pose
            time_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            writer.write(poses, time_ns, STORE.serialize_cdr(types[msgtype](header=msg.header, pose=pose), msgtype))
        if tf_static:
            def transform(parent, child, xyz, xyzw):
                header = types["std_msgs/msg/Header"](stamp=odom["odometry"][0].header.stamp, frame_id=parent)
                return types["geometry_msgs/msg/TransformStamped"](
                    header=header, child_frame_id=child, transform=types["geometry_msgs/msg/Transform"](
                        translation=types["geometry_msgs/msg/Vector3"](*xyz),
                        rotation=types["geometry_msgs/msg/Quaternion"](*xyzw)))

            message = types["tf2_msgs/msg/TFMessage"](transforms=[
                transform("base_link", "camera_link", (0.10, 0.0, 0.50), (0.0, 0.0, 0.0, 1.0)),
                transform("camera_link", "camera_optical_frame", (0.0, 0.0, 0.0), (-0.5, 0.5, -0.5, 0.5))])
            static = writer.add_connection("/tf_static", "tf2_msgs/msg/TFMessage", typestore=STORE)
            writer.write(static, odom["tf_static"][0][0], STORE.serialize_cdr(message, "tf2_msgs/msg/TFMessage"))
    return path


def test_pose_topic_with_a_static_chain_gives_the_ground_truth(odom, tmp_path):
    bag = _write_pose_bag(tmp_path / "pose_bag", odom, "geometry_msgs/msg/PoseStamped", tf_static=True)
    source = PoseSource("pose", topic="/pose", base_frame="base_link", fixed_frame="odom")
    assert_poses_equal(load_camera_trajectory(bag, source, odom["frame_id"]).at(odom["stamps"]), odom["truth"])
    camera_link = load_camera_trajectory(bag, source, "camera_link").at(odom["stamps"])
    np.testing.assert_allclose(relative_pose(camera_link, odom["truth"])[:, :3, 3], 0.0, atol=1e-4)  # same origin
    with pytest.raises(ValueError, match=r"/pose gives poses in 'odom', not in the fixed frame 'map'"):
        load_camera_trajectory(bag, PoseSource("pose", topic="/pose", base_frame="base_link", fixed_frame="map"),
                               odom["frame_id"])


def test_pose_with_covariance_topic_and_camera_to_base_give_the_ground_truth(odom, tmp_path):
    bag = _write_pose_bag(tmp_path / "pose_bag", odom, "geometry_msgs/msg/PoseWithCovarianceStamped",
                          tf_static=False)
    source = PoseSource("pose", topic="/pose", base_frame="base_link", camera_to_base=CAMERA_TO_BASE)
    assert_poses_equal(load_camera_trajectory(bag, source, odom["frame_id"]).at(odom["stamps"]), odom["truth"])
    unnamed_base = PoseSource("pose", topic="/pose", camera_to_base=CAMERA_TO_BASE)  # base poses, frame unnamed
    assert_poses_equal(load_camera_trajectory(bag, unnamed_base, odom["frame_id"]).at(odom["stamps"]),
                       odom["truth"])
    with pytest.raises(ValueError, match=r"no static transform chain base_link -> camera_optical_frame on "
                                         r"/tf_static \(static transforms: none\); give camera_to_base"):
        load_camera_trajectory(bag, PoseSource("pose", topic="/pose", base_frame="base_link"), odom["frame_id"])


def test_pose_source_rejects_incomplete_configurations():
    with pytest.raises(ValueError, match="kind 'gps'"):
        PoseSource("gps")
    with pytest.raises(ValueError, match="give the PoseStamped"):
        PoseSource("pose")
    with pytest.raises(ValueError, match="give the fixed frame"):
        PoseSource("tf")
    with pytest.raises(ValueError, match="6 finite numbers"):
        PoseSource(camera_to_base=[0.1, 0.0, 0.5])
