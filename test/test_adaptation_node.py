"""adaptation_node over real ROS 2 (localhost): what it trains on, what it rejects, and its guards, with real
7-Scenes frames and their camera poses as odometry."""

import time

import cv2
import pytest

from depth_ros.data.tum import TumRGBD
from depth_ros.geometry.transform import PoseTrajectory, pose_matrix, translation_quaternion
from depth_ros.ros.conversions import camera_info_msg, rgb_to_image_msg
from depth_ros.testing import NodeProcess, random_checkpoint

NAMESPACE = "/adapt"


@pytest.fixture(scope="module")
def drive(shared_data):
    """Frames 300..371 of the 30 Hz sequence, every 2nd: (rgb, camera, T_world_camera)."""
    folder = shared_data / "7scenes_redkitchen_odom" / "tum"
    sequence = TumRGBD(folder)
    trajectory = PoseTrajectory.from_tum_file(folder / "groundtruth.txt")
    return [(sequence[i].rgb, sequence.camera, trajectory.at(sequence[i].stamp)) for i in range(300, 372, 2)]


class Peer:
    """Publishes images, CameraInfo and odometry (the camera pose as the base pose: camera_to_base is identity)
    and records the node's /diagnostics."""

    def __init__(self):
        import threading

        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import Odometry
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("adaptation_peer", namespace=NAMESPACE, context=self.context)
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(Image, "image", reliable)
        self.info_pub = self.node.create_publisher(CameraInfo, "camera_info", reliable)
        self.odom_pub = self.node.create_publisher(Odometry, "odom", reliable)
        self.diagnostics: list[dict[str, str]] = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinner.start()
        self.stamp = 1_000.0

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if "online adaptation" in status.name:
                self.diagnostics.append({kv.key: kv.value for kv in status.values})

    def send(self, rgb, camera, pose, dt: float = 1 / 15, odom_pose=None, odom: bool = True, info=None) -> None:
        from builtin_interfaces.msg import Time
        from nav_msgs.msg import Odometry
        from std_msgs.msg import Header

        self.stamp += dt
        header = Header(frame_id="camera_optical_frame", stamp=Time(sec=int(self.stamp),
                                                                  nanosec=int(self.stamp % 1 * 1e9)))
        self.info_pub.publish(info or camera_info_msg(camera, header))
        if odom:
            msg = Odometry(header=Header(frame_id="odom", stamp=header.stamp), child_frame_id="base_link")
            translation, quaternion = translation_quaternion(pose if odom_pose is None else odom_pose)
            position, orientation = msg.pose.pose.position, msg.pose.pose.orientation
            position.x, position.y, position.z = (float(v) for v in translation)
            orientation.x, orientation.y, orientation.z, orientation.w = (float(v) for v in quaternion)
            self.odom_pub.publish(msg)
        time.sleep(0.02)
        self.image_pub.publish(rgb_to_image_msg(rgb, header))
        time.sleep(0.03)

    def latest(self, condition, what: str, node: NodeProcess, timeout: float = 60.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            node.check_running()
            if self.diagnostics and condition(self.diagnostics[-1]):
                return self.diagnostics[-1]
            time.sleep(0.1)
        raise TimeoutError(f"no diagnostics with {what}; last: {self.diagnostics[-1:]} (log: {node.log_path})")

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.spinner.join(timeout=2.0)
        self.node.destroy_node()
        self.context.try_shutdown()


def _assert_start_weights(path, start) -> None:
    import torch

    from depth_ros.checkpoints import load_checkpoint

    published, _ = load_checkpoint(path)
    expected, _ = load_checkpoint(start)
    assert all(torch.equal(published[k], v) for k, v in expected.items())


def _count(values: dict[str, str], key: str) -> int:
    return int(values.get(key, "0"))


@pytest.fixture(scope="module")
def adaptation(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adaptation")
    start = random_checkpoint(folder / "start.pth", input_size=42, max_depth=10.0)
    # a learning rate that wrecks every update: the guards must roll back and never publish
    params = {"checkpoint": str(start), "output_dir": str(folder / "out"), "depth_node_name": "",
              "camera_to_base": [0.0] * 6, "min_translation": 0.02, "batch_size": 2, "holdout_every": 3,
              "check_every": 2, "max_updates_per_second": 20.0, "diagnostics_period": 0.5, "max_speed": 1.0,
              "trainable": "full", "lr": 50.0}
    node = NodeProcess(params, folder / "adaptation_node.log", NAMESPACE, executable="adaptation_node")
    node.start_checkpoint = start
    peer = Peer()
    deadline = time.monotonic() + 60
    while peer.image_pub.get_subscription_count() == 0 or peer.odom_pub.get_subscription_count() == 0:
        node.check_running()
        assert time.monotonic() < deadline, node.log()
        time.sleep(0.1)
    time.sleep(0.5)
    yield node, peer, folder / "out"
    peer.close()
    assert node.stop() == 0, node.log()[-3000:]


@pytest.mark.xdist_group("adaptation_node")
class TestAdaptationNode:
    def test_a_stationary_camera_gives_keyframes_but_no_sample(self, adaptation, drive):
        node, peer, _ = adaptation
        rgb, camera, pose = drive[0]
        for _ in range(6):
            peer.send(rgb, camera, pose)
        values = peer.latest(lambda v: _count(v, "not moved") >= 4, "stationary frames", node)
        assert _count(values, "samples") == 0 and _count(values, "updates") == 0

    def test_pose_jumps_missing_odometry_and_mismatched_camera_info_are_rejected(self, adaptation, drive):
        node, peer, _ = adaptation
        rgb, camera, pose = drive[1]
        peer.send(rgb, camera, pose)
        peer.send(drive[2][0], camera, drive[2][2], odom_pose=pose_matrix([2.0, 0, 0, 0, 0, 0]) @ drive[2][2])
        peer.send(rgb, camera, pose, dt=-30.0, odom=False)  # an image 30 s before any odometry it has
        peer.stamp += 30.0
        small = cv2.resize(rgb, (320, 240), interpolation=cv2.INTER_AREA)
        peer.send(small, camera, pose)  # no CameraInfo has ever described a 320x240 image of this camera
        values = peer.latest(lambda v: _count(v, "rejected: pose jump") >= 1
                             and _count(v, "rejected: no odometry") >= 1
                             and _count(v, "rejected: no matching camera_info") >= 1, "the three rejections", node)
        assert _count(values, "samples") == 0

    def test_moving_camera_trains_and_a_diverging_model_is_rolled_back_never_published(self, adaptation, drive):
        node, peer, output_dir = adaptation
        peer.stamp += 5.0  # a pause: the keyframe chain restarts
        for rgb, camera, pose in drive:
            peer.send(rgb, camera, pose)
        values = peer.latest(lambda v: _count(v, "rollbacks") >= 1, "a rollback", node, timeout=120)
        # lr 50: the loss after the first update may already be non-finite, and roll back
        assert _count(values, "samples") >= 5 and _count(values, "updates") >= 1
        assert _count(values, "published") == 0
        if (output_dir / "latest.pth").exists():  # only the reset test writes it: the starting weights
            _assert_start_weights(output_dir / "latest.pth", node.start_checkpoint)

    def test_reset_service_publishes_the_starting_weights(self, adaptation):
        from std_srvs.srv import Trigger

        node, peer, output_dir = adaptation
        client = peer.node.create_client(Trigger, f"{NAMESPACE}/adaptation_node/reset")
        assert client.wait_for_service(timeout_sec=10.0)
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + 30
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert future.result().success and "reset to the starting checkpoint" in future.result().message
        _assert_start_weights(output_dir / "latest.pth", node.start_checkpoint)
        assert _count(peer.latest(lambda v: _count(v, "resets") == 1, "the reset", node), "published") == 0
