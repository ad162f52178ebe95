"""process_bag on the real 7-Scenes bag: the output bag reads back with rosbags, holds the node's topics with the
input's stamps and frames, its depth is the pipeline's depth for the same frame, and failures leave nothing behind."""

from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from depth_ros.geometry.camera import PinholeCamera
from depth_ros.geometry.transform import pose_matrix
from depth_ros.pipeline import DepthPipeline
from depth_ros.ros.conversions import cloud_msg_to_array, depth_image_to_array, image_to_rgb
from depth_ros.ros.params import NodeConfig
from depth_ros.tools.process_bag import main, process_bag

REPO = Path(__file__).resolve().parents[1]
BAG = "7scenes_redkitchen_20f_bag"
IMAGE_TOPIC = "/camera/color/image_raw"
INPUT_SIZE = 70


@pytest.fixture(scope="module")
def params_file(tmp_path_factory) -> Path:
    """config/depth.yaml plus a depth_node entry that overrides it: a grid range covering the random model's ~9 m."""
    path = tmp_path_factory.mktemp("process_bag_params") / "params.yaml"
    path.write_text((REPO / "config" / "depth.yaml").read_text()
                    + "/robot/depth_node:\n  ros__parameters:\n    grid_max_range: 20.0\n")
    return path


def _cli_args(bag: Path, checkpoint: Path, params: Path) -> list[str]:
    return [str(bag), "--params", str(params), "--checkpoint", str(checkpoint), "--input-size", str(INPUT_SIZE),
            "--device", "cpu"]


@pytest.fixture(scope="module")
def processed(shared_data, checkpoint, params_file, tmp_path_factory) -> Path:
    """The 7-Scenes bag processed by the CLI, with its input topics copied."""
    output = tmp_path_factory.mktemp("process_bag_out") / "processed"
    args = _cli_args(shared_data / BAG, checkpoint, params_file)
    assert main([args[0], str(output), *args[1:], "--namespace", "/estimated", "--copy-input"]) == 0
    return output


def _read(bag: Path) -> tuple[dict, dict]:
    """topic -> message count, and topic -> list of (log time, raw bytes, message)."""
    with AnyReader([bag]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        messages = {}
        for connection, time_ns, raw in reader.messages():
            messages.setdefault(connection.topic, []).append(
                (time_ns, bytes(raw), reader.deserialize(raw, connection.msgtype)))
    return counts, messages


def _stamp(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def test_output_bag_has_the_node_topics_with_input_stamps_and_copies(shared_data, processed):
    out_counts, out = _read(processed)
    in_counts, inp = _read(shared_data / BAG)
    assert (processed / "metadata.yaml").is_file() and len(list(processed.glob("*.mcap"))) == 1
    assert "version: 8" in (processed / "metadata.yaml").read_text()
    assert out_counts == {**in_counts, "/estimated/depth": 20, "/estimated/depth/camera_info": 20,
                          "/estimated/points": 20, "/estimated/occupancy": 20}
    for topic, messages in inp.items():  # copied byte for byte, at the same log times
        assert [(t, raw) for t, raw, _ in out[topic]] == [(t, raw) for t, raw, _ in messages], topic
    images = inp[IMAGE_TOPIC]
    for topic in ("/estimated/depth", "/estimated/depth/camera_info", "/estimated/points"):
        assert [(t, _stamp(m), m.header.frame_id) for t, _, m in out[topic]] == \
            [(t, _stamp(m), m.header.frame_id) for t, _, m in images], topic
    grids = out["/estimated/occupancy"]
    assert [(t, _stamp(m)) for t, _, m in grids] == [(t, _stamp(m)) for t, _, m in images]
    grid = grids[0][2]
    assert grid.header.frame_id == "base_link"
    assert (grid.info.width, grid.info.height, grid.info.resolution) == (200, 200, pytest.approx(0.05))
    assert set(np.unique(np.concatenate([m.data for _, _, m in grids]))) == {-1, 0, 100}


def test_outputs_are_the_pipelines_for_the_same_frame(shared_data, processed, checkpoint, params_file):
    _, out = _read(processed)
    _, inp = _read(shared_data / BAG)
    config = NodeConfig.from_params_file(params_file, checkpoint=str(checkpoint), input_size=INPUT_SIZE, device="cpu")
    assert config.grid_max_range == 20.0 and config.grid_frame == "base_link"
    pipeline = DepthPipeline.from_config(config)
    index = 7
    image = inp[IMAGE_TOPIC][index][2]
    camera = PinholeCamera.from_camera_info(inp["/camera/color/camera_info"][index][2])
    expected = pipeline.run(image_to_rgb(image), camera, pose_matrix(config.camera_to_base))
    depth_msg = out["/estimated/depth"][index][2]
    assert (depth_msg.encoding, depth_msg.height, depth_msg.width) == ("32FC1", 480, 640)
    depth = depth_image_to_array(depth_msg)
    np.testing.assert_allclose(depth, expected.depth, rtol=1e-5, equal_nan=True)
    assert np.isfinite(depth).mean() > 0.9
    out_camera = PinholeCamera.from_camera_info(out["/estimated/depth/camera_info"][index][2])
    assert out_camera == camera
    cloud = cloud_msg_to_array(out["/estimated/points"][index][2])
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1)
    np.testing.assert_array_equal(xyz, out_camera.backproject(depth))
    grid = out["/estimated/occupancy"][index][2]
    np.testing.assert_array_equal(grid.data.reshape(grid.info.height, grid.info.width), expected.grid)


def test_missing_topic_error_lists_the_bags_topics(shared_data, checkpoint, tmp_path, capsys):
    args = _cli_args(shared_data / BAG, checkpoint, REPO / "config" / "depth.yaml")
    output = tmp_path / "out"
    assert main([args[0], str(output), *args[1:], "--image-topic", "/camera/rgb"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("process_bag: error: ") and "'/camera/rgb'" in err
    assert "/camera/color/image_raw (sensor_msgs/msg/Image, 20 msgs)" in err and "/tf (tf2_msgs/msg/TFMessage" in err
    assert main([args[0], str(output), *args[1:], "--image-topic", "/tf"]) == 1
    assert "has type tf2_msgs/msg/TFMessage" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_truncated_bag_gives_one_line(shared_data, checkpoint, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    source = shared_data / BAG
    (broken / "metadata.yaml").write_bytes((source / "metadata.yaml").read_bytes())
    mcap = next(source.glob("*.mcap"))
    (broken / mcap.name).write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    args = _cli_args(broken, checkpoint, REPO / "config" / "depth.yaml")
    assert main([args[0], str(tmp_path / "out"), *args[1:]]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"process_bag: error: {broken}: cannot open bag")
    assert not (tmp_path / "out").exists()


def _bag_with_a_bad_image(source: Path, path: Path, index: int) -> None:
    """The images + CameraInfo of the ROS 2 bag, with image ``index`` re-encoded as bayer_rggb8 (unsupported)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    topics = (IMAGE_TOPIC, "/camera/color/camera_info")
    with AnyReader([source]) as reader, Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {c.topic: writer.add_connection(c.topic, c.msgtype, typestore=reader.typestore)
                       for c in reader.connections if c.topic in topics}
        images = 0
        for connection, time_ns, raw in reader.messages([c for c in reader.connections if c.topic in topics]):
            if connection.topic == IMAGE_TOPIC:
                if images == index:
                    msg = reader.deserialize(raw, connection.msgtype)
                    msg.encoding = "bayer_rggb8"
                    raw = reader.typestore.serialize_cdr(msg, connection.msgtype)
                images += 1
            writer.write(connections[connection.topic], time_ns, raw)


def test_a_bad_frame_is_skipped_and_reported_the_others_written(shared_data, checkpoint, tmp_path, capsys):
    bad_bag = tmp_path / "bad_frame"
    _bag_with_a_bad_image(shared_data / BAG, bad_bag, index=9)
    args = _cli_args(bad_bag, checkpoint, REPO / "config" / "depth.yaml")
    assert main([args[0], str(tmp_path / "out"), *args[1:]]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"process_bag: error: 1 of 20 frames skipped (the others are in {tmp_path / 'out'}): "
                          f"{bad_bag}: {IMAGE_TOPIC} at ") and "unsupported image encoding 'bayer_rggb8'" in err
    counts, out = _read(tmp_path / "out")
    assert counts == {"/depth_ros/depth": 19, "/depth_ros/depth/camera_info": 19, "/depth_ros/points": 19,
                      "/depth_ros/occupancy": 19}
    _, inp = _read(shared_data / BAG)
    good = [_stamp(m) for i, (_, _, m) in enumerate(inp[IMAGE_TOPIC]) if i != 9]
    assert [_stamp(m) for _, _, m in out["/depth_ros/depth"]] == good

    assert main([args[0], str(tmp_path / "strict"), *args[1:], "--strict"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"process_bag: error: {bad_bag}: {IMAGE_TOPIC} at ") and "bayer_rggb8" in err
    assert not (tmp_path / "strict").exists()


class _InterruptedPipeline:
    """The real pipeline, interrupted (as by Ctrl-C) on its sixth frame."""

    def __init__(self, pipeline):
        self.pipeline, self.grid_options, self.calls = pipeline, pipeline.grid_options, 0

    def run(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 6:
            raise KeyboardInterrupt
        return self.pipeline.run(*args, **kwargs)


def test_interrupted_run_leaves_no_output(shared_data, checkpoint, tmp_path):
    config = NodeConfig.from_params_file(checkpoint=str(checkpoint), input_size=INPUT_SIZE, device="cpu")
    pipeline = _InterruptedPipeline(DepthPipeline.from_config(config))
    with pytest.raises(KeyboardInterrupt):
        process_bag(shared_data / BAG, tmp_path / "out", config, pipeline=pipeline, progress=False)
    assert pipeline.calls == 6
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary folder


def _write_ros1_bag(source: Path, path: Path, frames: int) -> None:
    """The first ``frames`` images + CameraInfo of the ROS 2 bag, rewritten as a ROS 1 bag (noetic definitions)."""
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    ros1 = get_typestore(Stores.ROS1_NOETIC)
    topics = {IMAGE_TOPIC: "sensor_msgs/msg/Image", "/camera/color/camera_info": "sensor_msgs/msg/CameraInfo"}
    with AnyReader([source]) as reader, Writer(path) as writer:
        connections = {topic: writer.add_connection(topic, kind, typestore=ros1) for topic, kind in topics.items()}
        written = dict.fromkeys(topics, 0)
        for connection, time_ns, raw in reader.messages([c for c in reader.connections if c.topic in topics]):
            if written[connection.topic] == frames:
                continue
            msg = reader.deserialize(raw, connection.msgtype)
            stamp = ros1.types["builtin_interfaces/msg/Time"](msg.header.stamp.sec, msg.header.stamp.nanosec)
            header = ros1.types["std_msgs/msg/Header"](seq=written[connection.topic], stamp=stamp,
                                                       frame_id=msg.header.frame_id)
            if connection.topic == IMAGE_TOPIC:
                ros1_msg = ros1.types[connection.msgtype](header, msg.height, msg.width, msg.encoding, msg.is_bigendian,
                                                          msg.step, msg.data)
            else:
                ros1_msg = ros1.types[connection.msgtype](header, msg.height, msg.width, msg.distortion_model, msg.d,
                                                          msg.k, msg.r, msg.p, msg.binning_x, msg.binning_y, msg.roi)
            writer.write(connections[connection.topic], time_ns, ros1.serialize_ros1(ros1_msg, connection.msgtype))
            written[connection.topic] += 1


def test_ros1_bag_gives_the_same_depth_and_cdr_copies(shared_data, processed, checkpoint, params_file, tmp_path):
    ros1_bag = tmp_path / "three.bag"
    _write_ros1_bag(shared_data / BAG, ros1_bag, 3)
    args = _cli_args(ros1_bag, checkpoint, params_file)
    assert main([args[0], str(tmp_path / "out"), *args[1:], "--namespace", "/estimated", "--copy-input"]) == 0
    counts, out = _read(tmp_path / "out")
    assert counts == {"/camera/color/image_raw": 3, "/camera/color/camera_info": 3, "/estimated/depth": 3,
                      "/estimated/depth/camera_info": 3, "/estimated/points": 3, "/estimated/occupancy": 3}
    _, ros2_out = _read(processed)
    for topic in (IMAGE_TOPIC, "/camera/color/camera_info"):  # converted to the CDR bytes of the ROS 2 bag
        assert [raw for _, raw, _ in out[topic]] == [raw for _, raw, _ in ros2_out[topic][:3]], topic
    for (_, _, depth), (_, _, expected) in zip(out["/estimated/depth"], ros2_out["/estimated/depth"], strict=False):
        assert (_stamp(depth), depth.header.frame_id) == (_stamp(expected), expected.header.frame_id)
        np.testing.assert_allclose(depth_image_to_array(depth), depth_image_to_array(expected), rtol=1e-5,
                                   equal_nan=True)
