"""depth_node swaps its model at run time (``checkpoint`` parameter) between frames, over real ROS 2."""

import time

import numpy as np
import pytest

from depth_ros.ros.conversions import depth_image_to_array
from depth_ros.testing import NodeHarness, random_checkpoint

BAG = "7scenes_redkitchen_20f_bag"


@pytest.fixture(scope="module")
def frames(shared_data):
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader
    from sensor_msgs.msg import CameraInfo, Image

    with AnyReader([shared_data / BAG]) as reader:
        found = {}
        for topic, kind in (("/camera/color/image_raw", Image), ("/camera/color/camera_info", CameraInfo)):
            connection = next(c for c in reader.connections if c.topic == topic)
            _, _, raw = next(reader.messages(connections=[connection]))
            found[topic] = deserialize_message(raw, kind)
    return found["/camera/color/image_raw"], found["/camera/color/camera_info"]


@pytest.fixture(scope="class")
def swap_node(tmp_path_factory):
    folder = tmp_path_factory.mktemp("swap")
    first = random_checkpoint(folder / "first.pth", seed=0, train_focal_px=400.0)
    second = random_checkpoint(folder / "second.pth", seed=1, train_focal_px=400.0)
    corrupt = folder / "corrupt.pth"
    corrupt.write_bytes(second.read_bytes()[:4096])
    harness = NodeHarness({"checkpoint": str(first), "input_size": 70, "diagnostics_period": 0.5},
                          folder / "depth_node.log", "/swap", reliable_input=True)
    yield harness, first, second, corrupt
    assert harness.close() == 0, harness.log()[-3000:]


def _set_checkpoint(harness: NodeHarness, value: str):
    from rclpy.parameter import Parameter
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(harness.node, "/swap/depth_node")
    assert client.wait_for_services(timeout_sec=10.0)
    future = client.set_parameters([Parameter("checkpoint", value=value)])
    deadline = time.monotonic() + 10.0
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    return future.result().results[0]


def _stream(harness: NodeHarness, image, info, count: int, rate: float = 2.0) -> list[int]:
    stamps = []
    for _ in range(count):
        stamps.append(harness.send(image, info, settle=0.05))
        time.sleep(1.0 / rate)
    return stamps


@pytest.mark.xdist_group("depth_node_swap")
class TestModelSwap:
    def test_weights_swap_while_images_stream_and_no_frame_is_lost(self, swap_node, frames):
        harness, first, second, _ = swap_node
        image, info = frames
        before_values = harness.latest_diagnostics(lambda v: "model swaps" in v, "diagnostics")
        new = second if before_values["checkpoint"] == str(first) else first  # the tests run in either order
        before = _stream(harness, image, info, 4)
        assert _set_checkpoint(harness, str(new)).successful
        after = _stream(harness, image, info, 12)
        stamps = before + after
        outputs = [harness.outputs(stamp, ("depth",))["depth"] for stamp in stamps]  # every frame answered
        depths = [depth_image_to_array(msg) for msg in outputs]
        changes = [i for i in range(1, len(depths)) if not np.array_equal(depths[i], depths[i - 1], equal_nan=True)]
        assert len(changes) == 1 and changes[0] >= len(before)  # one switch, after the request, never back
        swaps = int(before_values["model swaps"]) + 1
        values = harness.latest_diagnostics(lambda v: v.get("model swaps") == str(swaps), "the swap in diagnostics")
        assert values["checkpoint"] == str(new) and values["dropped frames"] == "0"

    def test_a_corrupt_checkpoint_is_rejected_and_the_old_model_keeps_publishing(self, swap_node, frames):
        harness, _, _, corrupt = swap_node
        image, info = frames
        before = harness.latest_diagnostics(lambda v: "model swaps" in v, "diagnostics")
        reference = depth_image_to_array(harness.outputs(harness.send(image, info), ("depth",))["depth"])
        start = harness.log_size()
        assert _set_checkpoint(harness, str(corrupt)).successful  # the file exists: loading starts
        harness.wait_for_log(f"checkpoint {corrupt} rejected, keeping {before['checkpoint']}", start)
        missing = _set_checkpoint(harness, str(corrupt.with_name("missing.pth")))
        assert not missing.successful and "no such checkpoint file" in missing.reason
        for stamp in _stream(harness, image, info, 3):
            depth = depth_image_to_array(harness.outputs(stamp, ("depth",))["depth"])
            np.testing.assert_array_equal(depth, reference)
        rejected = int(before["rejected checkpoints"]) + 2
        values = harness.latest_diagnostics(lambda v: v.get("rejected checkpoints") == str(rejected), "rejections")
        assert values["checkpoint"] == before["checkpoint"] and values["model swaps"] == before["model swaps"]
