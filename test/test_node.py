"""depth_node end to end: the node runs in its own process (the installed ``depth_node`` script) and this test talks
to it over real rclpy / Fast DDS on localhost, with the real Image, CameraInfo and depth messages of the 7-Scenes bag.

The network has random weights (a local checkpoint of each architecture, at a small input size to keep CPU low:
the checkpoint records it and the node runs at it), so the tests check what the
node does with its output: headers, sizes, encodings, that ``points`` is the back-projection of ``depth`` with
``depth/camera_info``, that ``occupancy`` matches ``points`` moved by ``camera_to_base``, accuracy against the
reference depth, and that bad input is dropped with a named error while the node keeps answering. Exact grid cells
of an analytic scene are checked without ROS in test_pipeline.py.
"""

import copy
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from depth_ros.checkpoints import CheckpointMetadata, save_checkpoint
from depth_ros.geometry.camera import PinholeCamera
from depth_ros.geometry.occupancy import OCCUPIED, GridSpec
from depth_ros.geometry.pointcloud import unpack_rgb
from depth_ros.geometry.transform import transform_points
from depth_ros.metrics import evaluate_depth
from depth_ros.models import create_model
from depth_ros.pipeline import pose_matrix
from depth_ros.ros.conversions import cloud_msg_to_array, depth_image_to_array
from depth_ros.ros.params import DEFAULT_CAMERA_TO_BASE

NODE_SCRIPT = Path(sys.executable).with_name("depth_node")
BAG = "7scenes_redkitchen_20f_bag"
WAIT = 90.0  # s: bound of every wait (generous: the CPU is shared with the other tests)
OUTPUTS = ("depth", "depth/camera_info", "points", "occupancy", "/diagnostics")


# The node suite runs once per entry. PackNet's random output spans most of (0, 20) m, so its training focal is the
# bag camera's at network input (585 px at 640 -> 96 px wide): no focal rescaling pushes depth below min_depth.
CHECKPOINTS = {
    "depth_anything_v2": CheckpointMetadata("vits", "metric", 20.0, 70, train_focal_px=400.0),
    "packnet": CheckpointMetadata("tiny", "metric", 20.0, 64, train_focal_px=585.0 * 96 / 640, architecture="packnet"),
}


@pytest.fixture(scope="module", params=list(CHECKPOINTS))
def checkpoint(request, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    metadata = CHECKPOINTS[request.param]
    path = tmp_path_factory.mktemp("node_checkpoint") / f"{request.param}.pth"
    return save_checkpoint(path, create_model(metadata), metadata)


@pytest.fixture(scope="module")
def bag(shared_data) -> dict[str, list]:
    """First frames of the bag as rclpy messages, deserialised from the recorded CDR bytes."""
    from rclpy.serialization import deserialize_message
    from rosbags.highlevel import AnyReader
    from sensor_msgs.msg import CameraInfo, Image

    topics = {"/camera/color/image_raw": Image, "/camera/color/camera_info": CameraInfo,
              "/camera/depth/image_raw": Image}
    messages = {topic: [] for topic in topics}
    with AnyReader([shared_data / BAG]) as reader:
        connections = [c for c in reader.connections if c.topic in topics]
        for connection, _, raw in reader.messages(connections=connections):
            if len(messages[connection.topic]) < 4:
                messages[connection.topic].append(deserialize_message(raw, topics[connection.topic]))
    return {"image": messages["/camera/color/image_raw"], "info": messages["/camera/color/camera_info"],
            "depth": messages["/camera/depth/image_raw"]}


def _stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _ros_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(repr(float(v)) for v in value) + "]"
    return str(value)


class NodeHarness:
    """A depth_node process plus an in-process rclpy peer that feeds it and records its outputs by stamp."""

    def __init__(self, params: dict, log_path: Path, namespace: str, compressed: bool = False,
                 reliable: bool = False):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import OccupancyGrid
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

        env = dict(os.environ, RCUTILS_LOGGING_BUFFERED_STREAM="0", RCUTILS_COLORIZED_OUTPUT="0")
        args = [str(NODE_SCRIPT), "--ros-args", "-r", f"__ns:={namespace}"]
        for name, value in params.items():
            args += ["-p", f"{name}:={_ros_value(value)}"]
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("depth_node_tester", namespace=namespace, context=self.context)
        self.received = {topic: {} for topic in OUTPUTS}
        self.diagnostics = []
        self._changed = threading.Condition()
        reliable_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        types = {"depth": Image, "depth/camera_info": CameraInfo, "points": PointCloud2,
                 "occupancy": OccupancyGrid, "/diagnostics": DiagnosticArray}
        self._subscriptions = [
            self.node.create_subscription(kind, topic, lambda msg, topic=topic: self._record(topic, msg), reliable_qos)
            for topic, kind in types.items()
        ]
        self.image_type = CompressedImage if compressed else Image
        self.image_topic = "image/compressed" if compressed else "image"
        input_qos = reliable_qos if reliable else qos_profile_sensor_data
        self.image_pub = self.node.create_publisher(self.image_type, self.image_topic, input_qos)
        self.info_pub = self.node.create_publisher(CameraInfo, "camera_info", input_qos)
        self.reference_pub = self.node.create_publisher(Image, "reference_depth", input_qos)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()
        self._wait_until(
            lambda: self.image_pub.get_subscription_count() > 0 and self.info_pub.get_subscription_count() > 0
            and all(s.get_publisher_count() > 0 for s in self._subscriptions),
            "the node to start and match every topic")
        time.sleep(0.5)  # the node's side of discovery: it publishes only to subscribers it has seen

    def _record(self, topic: str, msg) -> None:
        with self._changed:
            if topic == "/diagnostics":
                values = {kv.key: kv.value for status in msg.status for kv in status.values}
                values["_message"] = msg.status[0].message
                self.diagnostics.append((time.monotonic(), values))
            else:
                self.received[topic][_stamp_ns(msg.header)] = msg
            self._changed.notify_all()

    def unsubscribe(self, suffixes: tuple[str, ...]) -> None:
        """Destroy the output subscriptions whose topic ends with one of ``suffixes``."""
        for subscription in [s for s in self._subscriptions if s.topic_name.endswith(suffixes)]:
            self._subscriptions.remove(subscription)
            self.node.destroy_subscription(subscription)

    def log(self, start: int = 0) -> str:
        return self.log_path.read_bytes()[start:].decode(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def _wait_until(self, condition, what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                if self.process.poll() is not None:
                    pytest.fail(f"depth_node exited ({self.process.returncode}) waiting for {what}:\n{self.log()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"no {what} within {timeout:.0f} s; node log:\n{self.log()[-3000:]}")
                self._changed.wait(timeout=0.1)

    def now(self):
        return self.node.get_clock().now().to_msg()

    def send(self, image=None, info=None, reference=None, stamp=None, frame_id=None, settle=0.1):
        """Publish copies of the messages with one stamp (default: now) and frame_id; returns the stamp in ns.

        CameraInfo and reference depth go first and the image ``settle`` seconds later, so the node has them when
        it takes the image (messages on different topics have no guaranteed order).
        """
        stamp = self.now() if stamp is None else stamp
        for publisher, msg in ((self.info_pub, info), (self.reference_pub, reference), (self.image_pub, image)):
            if msg is not None:
                msg = copy.deepcopy(msg)
                msg.header.stamp = stamp
                msg.header.frame_id = msg.header.frame_id if frame_id is None else frame_id
                if publisher is self.image_pub and (info is not None or reference is not None):
                    time.sleep(settle)
                publisher.publish(msg)
        return stamp.sec * 1_000_000_000 + stamp.nanosec

    def outputs(self, stamp: int, topics=("depth", "depth/camera_info", "points", "occupancy")) -> dict:
        """The messages on ``topics`` with this stamp, waiting for them."""
        self._wait_until(lambda: all(stamp in self.received[t] for t in topics),
                         f"{', '.join(topics)} for stamp {stamp}")
        return {topic: self.received[topic][stamp] for topic in topics}

    def wait_for_log(self, text: str, start: int) -> None:
        self._wait_until(lambda: text in self.log(start), f"log line containing {text!r}")

    def latest_diagnostics(self, condition, what: str, after: float | None = None) -> dict:
        """Values of the newest /diagnostics status that satisfies ``condition`` (received after ``after``)."""
        after = -math.inf if after is None else after
        self._wait_until(lambda: self.diagnostics and self.diagnostics[-1][0] > after
                         and condition(self.diagnostics[-1][1]), what)
        return self.diagnostics[-1][1]

    def close(self) -> None:
        self.process.send_signal(2)  # SIGINT: the node shuts down cleanly
        try:
            returncode = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            returncode = self.process.wait()
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
        assert returncode == 0, f"depth_node exited with {returncode}:\n{self.log()[-3000:]}"


# --------------------------------------------------------------------------------------------- default parameters
# The camera 0.3 m ahead of and 1 m left of base_link, turned 0.4 rad to the left: no symmetry hides a flipped grid.
CAMERA_TO_BASE = [0.3, 1.0, 0.5, DEFAULT_CAMERA_TO_BASE[3], 0.0, DEFAULT_CAMERA_TO_BASE[5] + 0.4]
NODE_PARAMS = {"use_reference_depth": True, "diagnostics_period": 0.5,
               "camera_to_base": CAMERA_TO_BASE}


@pytest.fixture(scope="class")
def node(checkpoint, bag, tmp_path_factory):
    harness = NodeHarness({"checkpoint": str(checkpoint), **NODE_PARAMS},
                          tmp_path_factory.mktemp("node") / "depth_node.log", "/e2e")
    yield harness
    harness.close()


@pytest.mark.xdist_group("depth_node_defaults")
class TestDefaultNode:
    def test_depth_has_the_image_header_encoding_and_size(self, node, bag):
        image, info = bag["image"][0], bag["info"][0]
        out = node.outputs(node.send(image, info))
        depth = out["depth"]
        assert depth.header.frame_id == image.header.frame_id == "camera_optical_frame"
        assert _stamp_ns(depth.header) == _stamp_ns(out["points"].header) == _stamp_ns(out["occupancy"].header)
        assert (depth.encoding, depth.width, depth.height, depth.step) == ("32FC1", 640, 480, 640 * 4)
        values = depth_image_to_array(depth)
        assert np.isfinite(values).any() and np.nanmin(values) >= 0.1 and np.nanmax(values) <= 20.0
        camera_info = out["depth/camera_info"]
        assert camera_info.header == depth.header and (camera_info.width, camera_info.height) == (640, 480)
        np.testing.assert_allclose(np.reshape(camera_info.k, (3, 3)), np.reshape(info.k, (3, 3)))

    def test_points_are_the_back_projection_of_the_published_depth(self, node, bag):
        out = node.outputs(node.send(bag["image"][1], bag["info"][1]))
        camera = PinholeCamera.from_camera_info(out["depth/camera_info"])
        expected = camera.backproject(depth_image_to_array(out["depth"]))
        cloud = cloud_msg_to_array(out["points"])
        assert cloud.shape == (480, 640) and not out["points"].is_dense
        assert out["points"].header == out["depth"].header
        for axis, name in enumerate("xyz"):
            np.testing.assert_allclose(cloud[name], expected[..., axis], rtol=1e-6, atol=1e-6, equal_nan=True)
        assert np.isfinite(cloud["z"]).mean() > 0.5

    def test_grid_is_the_published_points_moved_by_camera_to_base(self, node, bag):
        out = node.outputs(node.send(bag["image"][2], bag["info"][2]))
        grid_msg = out["occupancy"]
        assert grid_msg.header.frame_id == "base_link" and grid_msg.header.stamp == out["depth"].header.stamp
        info = grid_msg.info
        assert (info.resolution, info.width, info.height) == (pytest.approx(0.05), 200, 200)
        assert (info.origin.position.x, info.origin.position.y, info.origin.orientation.w) == (0.0, -5.0, 1.0)
        spec = GridSpec(info.resolution, info.width, info.height, info.origin.position.x, info.origin.position.y)
        grid = np.asarray(grid_msg.data, dtype=np.int8).reshape(info.height, info.width)

        pose = pose_matrix(CAMERA_TO_BASE)
        cloud = cloud_msg_to_array(out["points"])
        points = transform_points(pose, np.stack([cloud[a] for a in "xyz"], axis=-1).reshape(-1, 3))
        points = points[~np.isnan(points).any(axis=1)]
        in_range = np.linalg.norm(points - pose[:3, 3], axis=1) <= 5.0
        obstacles = points[in_range & (points[:, 2] >= 0.05) & (points[:, 2] <= 1.5)]
        cells = np.floor(spec.cell_coordinates(obstacles[:, :2])).astype(int)
        inside = (cells >= 0).all(axis=1) & (cells[:, 0] < spec.width) & (cells[:, 1] < spec.height)
        expected = {(row, col) for col, row in cells[inside]}
        assert len(expected) > 10, "the scene should put obstacles on the grid"
        assert {tuple(cell) for cell in np.argwhere(grid == OCCUPIED)} == expected
        camera_cell = tuple(np.floor(spec.cell_coordinates(pose[:2, 3])).astype(int)[::-1])
        assert grid[camera_cell] == 0, "the camera's own cell is seen free"
        assert set(np.unique(grid)) == {-1, 0, 100}

    def test_accuracy_against_reference_depth_in_diagnostics(self, node, bag):
        expected = []
        for i in (0, 3):
            stamp = node.send(bag["image"][i], bag["info"][i], reference=bag["depth"][i])
            prediction = depth_image_to_array(node.outputs(stamp)["depth"])
            reference = depth_image_to_array(bag["depth"][i])
            assert not np.isnan(prediction).any(), "random weights predict inside [min_depth, max_depth]"
            expected.append(evaluate_depth(prediction, reference, min_depth=0.1, max_depth=20.0))
        values = node.latest_diagnostics(lambda d: d.get("accuracy frames") == "2", "accuracy over 2 frames")
        for key, name in (("AbsRel", "abs_rel"), ("RMSE (m)", "rmse"), ("delta1", "delta1")):
            assert float(values[key]) == pytest.approx(np.mean([m[name] for m in expected]), rel=1e-3)
        assert int(values["processed frames"]) >= 2 and float(values["inference latency (ms)"]) > 0
        assert float(values["end-to-end latency (ms)"]) >= float(values["inference latency (ms)"])
        stages = ("decode", "preprocess", "inference", "postprocess", "cloud", "grid", "publish")
        assert all(float(values[f"{stage} (ms)"]) > 0 for stage in stages)

    def test_no_camera_info_yet_depth_only_with_a_warning(self, node, bag):
        start = node.log_size()
        stamp = node.send(bag["image"][0], frame_id="camera_without_info")
        depth = node.outputs(stamp, ("depth",))["depth"]
        assert depth.header.frame_id == "camera_without_info"
        node.wait_for_log("no valid CameraInfo on /e2e/camera_info for frame 'camera_without_info' yet", start)
        later = node.outputs(node.send(bag["image"][1], bag["info"][1]))  # the next frame with CameraInfo
        assert stamp not in node.received["points"] and stamp not in node.received["depth/camera_info"]
        assert stamp not in node.received["occupancy"] and later["points"].width == 640

    def test_camera_info_of_another_stamp_is_used_and_warned_once(self, node, bag):
        start = node.log_size()
        old = node.now()
        node.send(info=bag["info"][0], stamp=old, frame_id="late_camera")
        time.sleep(1.2)
        for i in (1, 2):
            out = node.outputs(node.send(bag["image"][i], frame_id="late_camera"))
            assert out["depth/camera_info"].header.frame_id == "late_camera" and out["points"].height == 480
        assert node.log(start).count("no CameraInfo with the image's stamp for frame 'late_camera'") == 1

    @pytest.mark.parametrize("problem", ["encoding", "short data", "zero size", "backwards stamp"])
    def test_bad_image_is_dropped_with_a_named_error_and_the_next_is_processed(self, node, bag, problem):
        image, info = bag["image"][0], bag["info"][0]
        bad = copy.deepcopy(image)
        stamp = None
        if problem == "encoding":
            bad.encoding, expected_log = "bayer_rggb8", "unsupported image encoding 'bayer_rggb8'"
        elif problem == "short data":
            bad.data = bad.data[: len(bad.data) // 2]
            expected_log = "fewer than step x height"
        elif problem == "zero size":
            bad.width = bad.height = bad.step = 0
            bad.data = []
            expected_log = "zero size"
        else:
            stamp = node.now()
            stamp.sec -= 10
            expected_log = "stamps going backwards"
        start = node.log_size()
        bad_stamp = node.send(bad, info, stamp=stamp)
        node.wait_for_log(expected_log, start)
        assert "dropping image" in node.log(start)
        out = node.outputs(node.send(image, info))
        assert out["depth"].width == 640
        assert bad_stamp not in node.received["depth"]
        assert node.process.poll() is None

    @pytest.mark.parametrize("problem", ["zero focal", "nan focal", "size"])
    def test_bad_camera_info_is_dropped_and_the_last_good_one_used(self, node, bag, problem):
        image, info = bag["image"][1], bag["info"][1]
        node.outputs(node.send(image, info))  # a good CameraInfo in the cache
        bad = copy.deepcopy(info)
        if problem == "zero focal":
            bad.k, bad.p = [0.0] * 9, [0.0] * 12
            expected_log = "invalid focal length fx=0.0"
        elif problem == "nan focal":
            bad.p = [math.nan] * 12
            expected_log = "invalid focal length fx=nan"
        else:
            bad.width, bad.height = 320, 240
            expected_log = "CameraInfo describes a 320x240 image (after binning/ROI) but the image is 640x480"
        start = node.log_size()
        out = node.outputs(node.send(image, bad))
        node.wait_for_log(expected_log, start)
        assert "dropping CameraInfo" in node.log(start)
        np.testing.assert_allclose(np.reshape(out["depth/camera_info"].k, (3, 3)), np.reshape(info.k, (3, 3)))
        assert out["points"].width == 640

    def test_frames_faster_than_inference_newest_wins(self, node, bag):
        start = time.monotonic()
        before = node.latest_diagnostics(lambda d: True, "diagnostics", after=start)
        stamps = [node.send(bag["image"][i % 4], bag["info"][i % 4], settle=0.0) for i in range(12)]  # back to back
        node.outputs(stamps[-1])  # the newest frame is always processed
        answered = [s for s in stamps if s in node.received["depth"]]
        assert len(answered) < len(stamps), "frames sent faster than inference must be dropped"

        def delta(values, key):
            return int(values[key]) - int(before[key])

        after = node.latest_diagnostics(
            lambda d: delta(d, "processed frames") == len(answered), "diagnostics counting the burst")
        assert delta(after, "dropped frames") > 0 and delta(after, "rejected messages") == 0
        assert delta(after, "received frames") == delta(after, "processed frames") + delta(after, "dropped frames")
        during = [values for received, values in node.diagnostics if received > start]
        assert max(float(d["input rate (Hz)"]) for d in during) > max(float(d["processed rate (Hz)"]) for d in during)


# ------------------------------------------------------------------ compressed input, smaller dense coloured output
SCALED_PARAMS = {"use_compressed": True, "reliable_input": True, "output_scale": 0.5,
                 "cloud_organized": False, "cloud_stride": 2, "colored": True, "cloud_max_range": 3.0,
                 "grid_frame": "odom", "diagnostics_period": 0.5}


@pytest.fixture(scope="class")
def scaled_node(checkpoint, bag, tmp_path_factory):
    harness = NodeHarness({"checkpoint": str(checkpoint), **SCALED_PARAMS},
                          tmp_path_factory.mktemp("scaled_node") / "depth_node.log", "/e2e_scaled", compressed=True,
                          reliable=True)
    yield harness
    harness.close()


def _compressed(image, fmt: str):
    from sensor_msgs.msg import CompressedImage

    rgb = np.frombuffer(bytes(image.data), np.uint8).reshape(image.height, image.width, 3)
    ok, encoded = cv2.imencode(f".{fmt}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return CompressedImage(header=image.header, format=fmt, data=encoded.tobytes()), rgb


@pytest.mark.xdist_group("depth_node_scaled")
class TestCompressedScaledNode:
    def test_png_input_gives_half_size_depth_and_scaled_camera_info(self, scaled_node, bag):
        compressed, _ = _compressed(bag["image"][0], "png")
        out = scaled_node.outputs(scaled_node.send(compressed, bag["info"][0]))
        assert (out["depth"].width, out["depth"].height) == (320, 240)
        camera = PinholeCamera.from_camera_info(out["depth/camera_info"])
        assert camera == PinholeCamera.from_camera_info(bag["info"][0]).resized(320, 240)
        assert (camera.fx, camera.cx) == (292.5, 159.75)
        assert out["occupancy"].header.frame_id == "odom"

    def test_dense_strided_coloured_cloud_is_the_back_projection_of_the_depth(self, scaled_node, bag):
        compressed, rgb = _compressed(bag["image"][1], "png")
        out = scaled_node.outputs(scaled_node.send(compressed, bag["info"][1]))
        camera = PinholeCamera.from_camera_info(out["depth/camera_info"])
        points = camera.backproject(depth_image_to_array(out["depth"]))[::2, ::2]
        colors = cv2.resize(rgb, (320, 240), interpolation=cv2.INTER_AREA)[::2, ::2]
        valid = ~np.isnan(points).any(axis=-1) & (np.linalg.norm(points, axis=-1) <= 3.0)
        cloud = cloud_msg_to_array(out["points"])
        assert cloud.dtype.names == ("x", "y", "z", "rgb") and out["points"].is_dense and out["points"].height == 1
        assert len(cloud) == valid.sum() > 0
        np.testing.assert_allclose(np.stack([cloud[a] for a in "xyz"], axis=-1), points[valid], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(unpack_rgb(cloud["rgb"]), colors[valid])

    def test_reliable_input_does_not_match_best_effort_publishers(self, scaled_node):
        from rclpy.qos import qos_profile_sensor_data

        best_effort = scaled_node.node.create_publisher(scaled_node.image_type, scaled_node.image_topic,
                                                        qos_profile_sensor_data)
        time.sleep(1.0)
        assert scaled_node.image_pub.get_subscription_count() == 1
        assert best_effort.get_subscription_count() == 0, "a reliable subscription ignores best-effort publishers"
        scaled_node.node.destroy_publisher(best_effort)

    def test_undecodable_jpeg_is_dropped_and_the_next_is_processed(self, scaled_node, bag):
        compressed, _ = _compressed(bag["image"][2], "jpg")
        broken = copy.deepcopy(compressed)
        broken.data = b"\xff\xd8 this is not a jpeg"
        start = scaled_node.log_size()
        bad_stamp = scaled_node.send(broken, bag["info"][2])
        scaled_node.wait_for_log("dropping image: cannot decode compressed image (format 'jpg'", start)
        out = scaled_node.outputs(scaled_node.send(compressed, bag["info"][2]))
        assert out["depth"].width == 320 and bad_stamp not in scaled_node.received["depth"]

    def test_outputs_nobody_subscribes_to_are_not_computed(self, scaled_node, bag):
        # Last test of this node: drops the points and occupancy subscriptions, then all outputs.
        scaled_node.unsubscribe(("/points", "/occupancy"))
        time.sleep(1.0)  # the node sees them go
        compressed, _ = _compressed(bag["image"][3], "png")
        stamp = scaled_node.send(compressed, bag["info"][3])
        scaled_node.outputs(stamp, ("depth", "depth/camera_info"))
        received = time.monotonic()
        values = scaled_node.latest_diagnostics(lambda d: "inference (ms)" in d, "diagnostics after the frame",
                                                after=received)
        assert "cloud (ms)" not in values and "grid (ms)" not in values

        scaled_node.unsubscribe(("/depth", "/depth/camera_info"))
        time.sleep(1.0)
        sent = time.monotonic()
        scaled_node.send(compressed, bag["info"][3])
        scaled_node.latest_diagnostics(lambda d: d["_message"].startswith("idle: nothing subscribes"),
                                       "an idle status", after=sent)
