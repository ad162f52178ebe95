"""depth_node with a sigma head, over real rclpy / Fast DDS with the 7-Scenes bag's messages: ``depth/uncertainty``
(32FC1 m, depth's header) once something subscribes to it, sigma gating of ``points`` at ``max_relative_sigma``,
and a checkpoint without a sigma head: warnings, no gating, no crash."""

import threading

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from test_uncertainty import varied_sigma_checkpoint

from depth_ros.estimator import DepthEstimator
from depth_ros.geometry.camera import PinholeCamera
from depth_ros.pipeline import DepthPipeline
from depth_ros.ros.conversions import cloud_msg_to_array, depth_image_to_array, image_to_rgb, stamp_ns
from depth_ros.ros.params import NodeConfig
from depth_ros.testing import DISCOVERY_SETTLE, NodeHarness, random_checkpoint

BAG = "7scenes_redkitchen_20f_bag"
PARAMS = {"max_image_pixels": 640 * 480, "diagnostics_period": 0.5}


@pytest.fixture(scope="module")
def bag(shared_data) -> dict[str, list]:
    """The bag's first two images and CameraInfos as rclpy messages."""
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader
    from sensor_msgs.msg import CameraInfo, Image

    topics = {"/camera/color/image_raw": Image, "/camera/color/camera_info": CameraInfo}
    messages = {topic: [] for topic in topics}
    with AnyReader([shared_data / BAG]) as reader:
        for connection, _, raw in reader.messages([c for c in reader.connections if c.topic in topics]):
            if len(messages[connection.topic]) < 2:
                messages[connection.topic].append(deserialize_message(raw, topics[connection.topic]))
    return {"image": messages["/camera/color/image_raw"], "info": messages["/camera/color/camera_info"]}


class SigmaSubscriber:
    """A ``depth/uncertainty`` subscription on the harness's peer node, created on demand (reliable, as RViz)."""

    def __init__(self, harness: NodeHarness):
        from sensor_msgs.msg import Image

        self.harness, self.received, self.lock = harness, {}, threading.Lock()
        self.subscription = harness.node.create_subscription(
            Image, "depth/uncertainty", self._record, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        harness.wait_until(lambda: self.subscription.get_publisher_count() > 0, "depth/uncertainty to match")
        import time

        time.sleep(DISCOVERY_SETTLE)

    def _record(self, msg) -> None:
        with self.lock:
            self.received[stamp_ns(msg.header)] = msg

    def get(self, stamp: int):
        self.harness.wait_until(lambda: stamp in self.received, f"depth/uncertainty for stamp {stamp}")
        return self.received[stamp]


@pytest.fixture(scope="module")
def threshold(tmp_path_factory, bag):
    """The checkpoint with a varied sigma head and the median sigma / depth of the first image as the node sees it."""
    path = varied_sigma_checkpoint(tmp_path_factory.mktemp("sigma") / "sigma.safetensors")
    config = NodeConfig.from_values({"checkpoint": str(path), **PARAMS})
    pipeline = DepthPipeline.from_config(config, DepthEstimator.from_checkpoint(path, device="cpu"))
    camera = PinholeCamera.from_camera_info(bag["info"][0])
    out = pipeline.run(image_to_rgb(bag["image"][0]), camera, want_uncertainty=True)
    return path, float(np.nanmedian(out.uncertainty / out.depth))


@pytest.fixture(scope="module")
def sigma_node(threshold, tmp_path_factory):
    path, value = threshold
    harness = NodeHarness({"checkpoint": str(path), "max_relative_sigma": value, **PARAMS},
                          tmp_path_factory.mktemp("node") / "depth_node.log", "/sigma")
    yield harness, value
    assert harness.close() == 0, harness.log()[-3000:]


def test_uncertainty_is_published_once_subscribed_with_the_depth_header_and_gates_points(sigma_node, bag):
    node, value = sigma_node
    before = node.send(bag["image"][0], bag["info"][0])
    node.outputs(before)  # depth, points, ... while nothing subscribes to depth/uncertainty
    sigma_topic = SigmaSubscriber(node)
    stamp = node.send(bag["image"][0], bag["info"][0])
    out = node.outputs(stamp)
    sigma_msg = sigma_topic.get(stamp)
    assert before not in sigma_topic.received
    depth_msg = out["depth"]
    assert sigma_msg.header == depth_msg.header and sigma_msg.header.frame_id == "camera_optical_frame"
    assert (sigma_msg.encoding, sigma_msg.width, sigma_msg.height, sigma_msg.step) == ("32FC1", 640, 480, 640 * 4)
    depth, sigma = depth_image_to_array(depth_msg), depth_image_to_array(sigma_msg)
    np.testing.assert_array_equal(np.isnan(sigma), np.isnan(depth))
    assert (sigma[np.isfinite(sigma)] > 0).all()
    # points: exactly the pixels whose sigma / depth is within max_relative_sigma (about half, by its choice)
    cloud = cloud_msg_to_array(out["points"])
    kept = np.isfinite(cloud["z"])
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(kept, sigma <= value * depth)
    assert 0.3 < kept.mean() < 0.7 and np.isfinite(depth).mean() > 0.9
    np.testing.assert_allclose(cloud["z"][kept], depth[kept], rtol=1e-6)
    assert "no sigma head" not in node.log()


def test_a_model_without_sigma_head_warns_once_and_publishes_ungated_points(tmp_path, bag):
    path = random_checkpoint(tmp_path / "plain.pth", "tiny", 64, architecture="packnet",
                             train_focal_px=585.0 * 96 / 640)
    with NodeHarness({"checkpoint": str(path), "max_relative_sigma": 0.05, **PARAMS}, tmp_path / "node.log",
                     "/plain") as node:
        node.wait_for_log("points and occupancy are not gated")
        sigma_topic = SigmaSubscriber(node)
        for i in (0, 1):
            out = node.outputs(node.send(bag["image"][i], bag["info"][i]))
            depth = depth_image_to_array(out["depth"])
            np.testing.assert_array_equal(np.isfinite(cloud_msg_to_array(out["points"])["z"]), np.isfinite(depth))
        node.wait_for_log("has a subscriber but")
        log = node.log()
        assert log.count("points and occupancy are not gated") == 1 and log.count("has a subscriber but") == 1
        assert not sigma_topic.received
        node.check_running()
        assert node.close() == 0
