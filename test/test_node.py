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
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time

from depth_ros.geometry.camera import PinholeCamera
from depth_ros.geometry.occupancy import OCCUPIED, GridSpec
from depth_ros.geometry.pointcloud import unpack_rgb
from depth_ros.geometry.transform import pose_matrix, transform_points
from depth_ros.metrics import evaluate_depth
from depth_ros.ros.conversions import (
    cloud_msg_to_array,
    depth_image_to_array,
    depth_to_image_msg,
    rgb_to_image_msg,
    stamp_ns,
)
from depth_ros.ros.params import DEFAULT_CAMERA_TO_BASE
from depth_ros.ros.throttle import LOG_PERIOD
from depth_ros.testing import NodeHarness, large_png, random_checkpoint

BAG = "7scenes_redkitchen_20f_bag"


# The node suite runs once per architecture. PackNet's random output spans most of (0, 20) m, so its training focal
# is the bag camera's at network input (585 px at 640 -> 96 px wide): no focal rescaling pushes depth below
# min_depth. The DA-V2 one's focal correction makes its random depth about 2 m, so the 5 m grid range sees obstacles.
CHECKPOINTS = {
    "depth_anything_v2": {"encoder": "vits", "input_size": 70, "train_focal_px": 400.0},
    "packnet": {"encoder": "tiny", "input_size": 64, "train_focal_px": 585.0 * 96 / 640, "architecture": "packnet"},
}


@pytest.fixture(scope="module", params=list(CHECKPOINTS))
def checkpoint(request, tmp_path_factory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("node_checkpoint") / f"{request.param}.pth",
                             **CHECKPOINTS[request.param])


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


def _close(harness: NodeHarness) -> None:
    returncode = harness.close()
    assert returncode == 0, f"depth_node exited with {returncode}:\n{harness.log()[-3000:]}"


# --------------------------------------------------------------------------------------------- default parameters
# The camera 0.3 m ahead of and 1 m left of base_link, turned 0.4 rad to the left: no symmetry hides a flipped grid.
CAMERA_TO_BASE = [0.3, 1.0, 0.5, DEFAULT_CAMERA_TO_BASE[3], 0.0, DEFAULT_CAMERA_TO_BASE[5] + 0.4]
NODE_PARAMS = {"use_reference_depth": True, "diagnostics_period": 0.5,  # input size: the checkpoint's
               "camera_to_base": CAMERA_TO_BASE, "max_image_pixels": 640 * 480}  # exactly the bag's images


@pytest.fixture(scope="class")
def node(checkpoint, bag, tmp_path_factory):
    harness = NodeHarness({"checkpoint": str(checkpoint), **NODE_PARAMS},
                          tmp_path_factory.mktemp("node") / "depth_node.log", "/e2e")
    yield harness
    _close(harness)


@pytest.mark.xdist_group("depth_node_defaults")
class TestDefaultNode:
    def test_depth_has_the_image_header_encoding_and_size(self, node, bag):
        image, info = bag["image"][0], bag["info"][0]
        out = node.outputs(node.send(image, info))
        depth = out["depth"]
        assert depth.header.frame_id == image.header.frame_id == "camera_optical_frame"
        assert stamp_ns(depth.header) == stamp_ns(out["points"].header) == stamp_ns(out["occupancy"].header)
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
        # latencies are in the statuses of periods with frames, which may precede the one with both accuracies
        latest = node.diagnostic_values()
        assert int(values["processed frames"]) >= 2 and float(latest["inference latency (ms)"]) > 0
        assert float(latest["end-to-end latency (ms)"]) >= float(latest["inference latency (ms)"])
        stages = ("decode", "preprocess", "inference", "postprocess", "cloud", "grid", "publish")
        assert all(float(latest[f"{stage} (ms)"]) > 0 for stage in stages)

    def test_no_camera_info_yet_depth_only_with_a_warning(self, node, bag):
        start = node.log_size()
        stamp = node.send(bag["image"][0], frame_id="camera_without_info")
        depth = node.outputs(stamp, ("depth",))["depth"]
        assert depth.header.frame_id == "camera_without_info"
        node.wait_for_log("no valid CameraInfo for frame 'camera_without_info' yet on /e2e/camera_info", start)
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

    @pytest.mark.parametrize("problem", ["encoding", "short data", "zero size", "backwards stamp", "too large"])
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
        elif problem == "too large":  # one pixel wider than max_image_pixels allows
            rgb = np.frombuffer(bytes(image.data), np.uint8).reshape(480, 640, 3)
            bad = rgb_to_image_msg(np.ascontiguousarray(np.pad(rgb, ((0, 0), (0, 1), (0, 0)))), image.header)
            expected_log = "color image is 641x480 = 307680 px, more than the limit of 307200 px (max_image_pixels)"
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
        assert node.node_process.process.poll() is None

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
            expected_log = ("does not fit this image: CameraInfo describes a 320x240 image (after binning/ROI) but "
                            "the image is 640x480; using the nearest one of its size")
        start = node.log_size()
        out = node.outputs(node.send(image, bad))
        node.wait_for_log(expected_log, start)
        np.testing.assert_allclose(np.reshape(out["depth/camera_info"].k, (3, 3)), np.reshape(info.k, (3, 3)))
        assert out["points"].width == 640

    def test_a_repeated_problem_is_logged_once_per_period_with_a_count(self, node, bag):
        image = rgb_to_image_msg(np.zeros((16, 16, 3), np.uint8), bag["image"][0].header)
        rejected = int(node.latest_diagnostics(lambda d: True, "diagnostics")["rejected messages"])
        start, started = node.log_size(), time.monotonic()
        now = node.node.get_clock().now().nanoseconds
        for back in range(1, 301):  # each stamp 1 ms before the previous: 300 different texts, one kind of problem
            sec, nanosec = divmod(now - back * 1_000_000, 1_000_000_000)
            node.send(image, stamp=Time(sec=sec, nanosec=nanosec))
            time.sleep(0.005)  # paced, so that the best-effort input queue (depth 5) loses few of them
        elapsed = time.monotonic() - started
        node.outputs(node.send(bag["image"][0], bag["info"][0]))  # the node took the burst and answers again
        values = node.latest_diagnostics(lambda d: int(d["rejected messages"]) >= rejected + 50, "the burst counted")
        # at most one line per LOG_PERIOD (none if an earlier test logged this problem less than LOG_PERIOD ago)
        lines = [line for line in node.log(start).splitlines() if "stamps going backwards" in line]
        assert len(lines) <= 1 + elapsed / LOG_PERIOD < int(values["rejected messages"]) - rejected, lines

    def test_an_image_of_another_size_keeps_the_camera_info_for_the_next_frames(self, node, bag):
        image, info = bag["image"][1], bag["info"][1]
        node.outputs(node.send(image, info, frame_id="resized_camera"))
        rgb = np.frombuffer(bytes(image.data), np.uint8).reshape(480, 640, 3)
        small = rgb_to_image_msg(cv2.resize(rgb, (320, 240), interpolation=cv2.INTER_AREA), image.header)
        start = node.log_size()
        stamp = node.send(small, frame_id="resized_camera")  # no CameraInfo of its size
        assert node.outputs(stamp, ("depth",))["depth"].width == 320
        node.wait_for_log("CameraInfo for frame 'resized_camera' does not fit this image", start)
        out = node.outputs(node.send(image, frame_id="resized_camera"))  # the 640x480 CameraInfo is still there
        assert out["points"].width == 640 and stamp not in node.received["points"]

    def test_reference_depth_of_another_aspect_ratio_is_not_scored(self, node, bag):
        before = int(node.latest_diagnostics(lambda d: True, "diagnostics").get("accuracy frames", 0))
        cropped = copy.deepcopy(bag["depth"][0])
        cropped.height = 100  # 640x100: the first 100 rows of a 640x480 reference
        cropped.data = cropped.data[: cropped.step * 100]
        start = node.log_size()
        node.outputs(node.send(bag["image"][0], bag["info"][0], reference=cropped))
        node.wait_for_log("dropping reference_depth: reference depth of 640x100 px is not an integer scaling of the "
                          "640x480 px depth", start)
        assert "[WARN]" in next(line for line in node.log(start).splitlines() if "reference_depth" in line)
        reference = depth_image_to_array(bag["depth"][1])
        half = depth_to_image_msg(reference[::2, ::2], bag["depth"][1].header)  # 320x240: integer scaling, scored
        node.outputs(node.send(bag["image"][1], bag["info"][1], reference=half))
        values = node.latest_diagnostics(lambda d: int(d.get("accuracy frames", 0)) > before, "a scored frame")
        assert int(values["accuracy frames"]) == before + 1, "the cropped reference must not be scored"

    def test_empty_frame_id_is_processed_with_a_warning(self, node, bag):
        start = node.log_size()
        depth = node.outputs(node.send(bag["image"][2], frame_id=""), ("depth",))["depth"]
        assert depth.header.frame_id == ""
        node.wait_for_log("image has an empty frame_id", start)

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
        # the diagnostics that saw the burst report more input than processing (each sample compared with itself)
        assert any(float(d["input rate (Hz)"]) > float(d["processed rate (Hz)"]) for d in during)


# ------------------------------------------------------------------ compressed input, smaller dense coloured output
SCALED_PARAMS = {"use_compressed": True, "reliable_input": True, "output_scale": 0.5,
                 "cloud_organized": False, "cloud_stride": 2, "colored": True, "cloud_max_range": 3.0,
                 "grid_frame": "odom", "diagnostics_period": 0.5}


@pytest.fixture(scope="class")
def scaled_node(checkpoint, bag, tmp_path_factory):
    harness = NodeHarness({"checkpoint": str(checkpoint), **SCALED_PARAMS},
                          tmp_path_factory.mktemp("scaled_node") / "depth_node.log", "/e2e_scaled", compressed=True,
                          reliable_input=True)
    yield harness
    _close(harness)


def _compressed(image, fmt: str):
    from sensor_msgs.msg import CompressedImage

    rgb = np.frombuffer(bytes(image.data), np.uint8).reshape(image.height, image.width, 3)
    ok, encoded = cv2.imencode(f".{fmt}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return CompressedImage(header=image.header, format=fmt, data=encoded.tobytes()), rgb


@pytest.mark.xdist_group("depth_node_scaled")
class TestCompressedScaledNode:
    def test_an_unset_stamp_gives_no_latency_from_stamp(self, scaled_node, bag):
        # First test of this node: a stamp of 0 after any other stamp would be dropped as going backwards.
        compressed, _ = _compressed(bag["image"][0], "png")
        start = scaled_node.log_size()
        scaled_node.outputs(scaled_node.send(compressed, bag["info"][0], stamp=Time()), ("depth",))
        scaled_node.wait_for_log("image stamp is 0 (unset)", start)
        values = scaled_node.latest_diagnostics(lambda d: "inference (ms)" in d, "diagnostics of the frame")
        assert "latency from stamp (ms)" not in values
        scaled_node.outputs(scaled_node.send(compressed, bag["info"][0]), ("depth",))
        scaled_node.latest_diagnostics(lambda d: "latency from stamp (ms)" in d, "a stamped frame's latency")

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
        scaled_node.wait_for_log("dropping image: cannot decode compressed image (format 'jpg')", start)
        out = scaled_node.outputs(scaled_node.send(compressed, bag["info"][2]))
        assert out["depth"].width == 320 and bad_stamp not in scaled_node.received["depth"]

    def test_a_png_over_max_image_pixels_is_dropped_from_its_header(self, scaled_node, bag):
        from sensor_msgs.msg import CompressedImage

        bomb = CompressedImage(header=bag["image"][3].header, format="png", data=large_png())  # 10000 x 10000 px
        start = scaled_node.log_size()
        bad_stamp = scaled_node.send(bomb, bag["info"][3])
        scaled_node.wait_for_log("dropping image: compressed image (format 'png') is 10000x10000 = 100000000 px, "
                                 "more than the limit of 16777216 px (max_image_pixels)", start)
        compressed, _ = _compressed(bag["image"][3], "png")
        out = scaled_node.outputs(scaled_node.send(compressed, bag["info"][3]))
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


def test_compressed_depth_reference_is_scored_like_the_raw_one(checkpoint, bag, tmp_path):
    """reference_transport compressedDepth: image_transport's 16UC1 PNG layout (12-byte header, then the PNG)."""
    import struct

    from sensor_msgs.msg import CompressedImage

    raw = bag["depth"][2]
    millimetres = np.nan_to_num(depth_image_to_array(raw) * 1000.0).round().astype(np.uint16)
    compressed = CompressedImage(header=raw.header, format="16UC1; compressedDepth png",
                                 data=struct.pack("<iff", 0, 0.0, 0.0) + cv2.imencode(".png", millimetres)[1].tobytes())
    params = {"checkpoint": str(checkpoint), **NODE_PARAMS, "reference_transport": "compressedDepth"}
    with NodeHarness(params, tmp_path / "depth_node.log", "/compressed_reference") as node:
        prediction = depth_image_to_array(
            node.outputs(node.send(bag["image"][2], bag["info"][2], reference=compressed))["depth"])
        values = node.latest_diagnostics(lambda d: d.get("accuracy frames") == "1", "the scored frame")
    expected = evaluate_depth(prediction, millimetres.astype(np.float32) / 1000.0, min_depth=0.1, max_depth=20.0)
    assert float(values["AbsRel"]) == pytest.approx(expected["abs_rel"], rel=1e-3)
