"""Hostile input over the real interfaces (docs/robustness.md): the nodes over real ROS 2 in their own processes, the
tools as console scripts. Each test is the regression test of one defect of issue 22."""

import copy
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time

from depth_ros.geometry.camera import PinholeCamera
from depth_ros.ros.conversions import camera_info_msg, rgb_to_image_msg
from depth_ros.testing import NodeHarness, NodeProcess, random_checkpoint

CAMERA = PinholeCamera(fx=120.0, fy=120.0, cx=79.5, cy=59.5, width=160, height=120)
NAMESPACE = "/robust"


def _messages():
    from std_msgs.msg import Header

    rgb = np.random.default_rng(0).integers(0, 255, (CAMERA.height, CAMERA.width, 3), dtype=np.uint8)
    header = Header(frame_id="camera_optical_frame")
    return rgb_to_image_msg(rgb, header), camera_info_msg(CAMERA, header)


def _wait(future, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    return future.result()


# ------------------------------------------------------------------------------------------------------ depth_node
@pytest.fixture(scope="module")
def depth_node(checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("robust_depth_node")
    harness = NodeHarness({"checkpoint": str(checkpoint), "diagnostics_period": 0.5}, folder / "depth_node.log",
                          NAMESPACE, reliable_input=True)
    yield harness, folder
    assert harness.close() == 0, harness.log()[-3000:]


def _parameter_client(harness: NodeHarness):
    from rclpy.parameter_client import AsyncParameterClient

    client = AsyncParameterClient(harness.node, f"{NAMESPACE}/depth_node")
    assert client.wait_for_services(timeout_sec=10.0)
    return client


def _checkpoint_parameter(client) -> str:
    return _wait(client.get_parameters(["checkpoint"])).values[0].string_value


@pytest.mark.xdist_group("robust_depth_node")
class TestDepthNode:
    def test_a_rejected_checkpoint_never_stays_the_parameter(self, depth_node, checkpoint):
        from rclpy.parameter import Parameter

        harness, folder = depth_node
        client = _parameter_client(harness)
        image, info = _messages()
        empty, garbage = folder / "empty.pth", folder / "garbage.pth"
        empty.write_bytes(b"")
        garbage.write_bytes(b"x")  # a regular, non-empty file whose load fails at once: the revert races the set
        for refused, reason in ((empty, "the file is empty"), ("/dev/zero", "not a regular file")):
            result = _wait(client.set_parameters([Parameter("checkpoint", value=str(refused))])).results[0]
            assert not result.successful and reason in result.reason
            assert _checkpoint_parameter(client) == str(checkpoint)
        for _ in range(3):
            start = harness.log_size()
            result = _wait(client.set_parameters([Parameter("checkpoint", value=str(garbage))])).results[0]
            assert result.successful  # accepted: it loads in the background, the old model goes on
            harness.wait_for_log(f"checkpoint {garbage} rejected, keeping {checkpoint}", start)
            deadline = time.monotonic() + 10.0
            while _checkpoint_parameter(client) != str(checkpoint):
                assert time.monotonic() < deadline, "the parameter still names the rejected checkpoint"
                time.sleep(0.1)
            harness.outputs(harness.send(image, info), ("depth",))  # the old model still publishes
        values = harness.latest_diagnostics(lambda v: int(v.get("rejected checkpoints", 0)) >= 5, "rejections")
        assert values["checkpoint"] == str(checkpoint) and _checkpoint_parameter(client) == str(checkpoint)

    def test_an_implausible_focal_length_drops_the_camera_info(self, depth_node):
        harness, _ = depth_node
        image, info = _messages()
        bad = copy.deepcopy(info)
        bad.p[0] = 1e30
        start = harness.log_size()
        out = harness.outputs(harness.send(image, bad, frame_id="huge_focal"), ("depth",))
        harness.wait_for_log("dropping CameraInfo: CameraInfo P has an implausible focal length fx=1e+30", start)
        assert out["depth"].width == CAMERA.width
        assert "no valid CameraInfo for frame 'huge_focal'" in harness.log(start)  # depth only

    def test_a_clock_jump_is_warned_and_the_frames_after_it_are_processed(self, depth_node):
        harness, _ = depth_node
        image, info = _messages()
        now = harness.now()
        start = harness.log_size()
        stamps = [harness.send(image, info, stamp=Time(sec=now.sec + 365 * 86400, nanosec=now.nanosec))]
        harness.outputs(stamps[0], ("depth",))
        stamps += [harness.send(image, info) for _ in range(2)]  # back to the normal clock: a year backwards
        for stamp in stamps:
            harness.outputs(stamp, ("depth",))
        log = harness.log(start)
        assert "a clock jump (more than 30.0 s)" in log and "stamps going backwards" not in log


# ------------------------------------------------------------------------------------------------- adaptation_node
def test_adaptation_reset_that_cannot_write_answers_false_and_the_node_goes_on(tmp_path):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from std_srvs.srv import Trigger

    start = random_checkpoint(tmp_path / "start.pth", input_size=42)
    output_dir = tmp_path / "adapted"
    node = NodeProcess({"checkpoint": str(start), "output_dir": str(output_dir), "depth_node_name": "",
                        "camera_to_base": [0.0] * 6}, tmp_path / "adaptation_node.log", NAMESPACE,
                       executable="adaptation_node")
    context = rclpy.Context()
    rclpy.init(context=context)
    peer = rclpy.create_node("reset_peer", namespace=NAMESPACE, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(peer)
    try:
        client = peer.create_client(Trigger, f"{NAMESPACE}/adaptation_node/reset")
        deadline = time.monotonic() + 60
        while not client.service_is_ready():
            node.check_running()
            assert time.monotonic() < deadline, node.log()
            executor.spin_once(timeout_sec=0.1)
        output_dir.write_text("a file where the published weights should go")  # after a clean start
        for _ in range(2):  # the node survives the failure and answers again
            future = client.call_async(Trigger.Request())
            executor.spin_until_future_complete(future, timeout_sec=30.0)
            assert not future.result().success and "reset failed: FileExistsError" in future.result().message
            node.check_running()
        output_dir.unlink()
        future = client.call_async(Trigger.Request())
        executor.spin_until_future_complete(future, timeout_sec=30.0)
        assert future.result().success and (output_dir / "latest.pth").is_file()
        assert "Traceback" not in node.log()
    finally:
        executor.shutdown(timeout_sec=2.0)
        peer.destroy_node()
        context.try_shutdown()
        assert node.stop() == 0, node.log()[-3000:]


def test_adaptation_node_bounds_the_decoded_size_of_compressed_images(tmp_path):
    import rclpy
    from nav_msgs.msg import Odometry
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage

    from depth_ros.testing import large_png

    start = random_checkpoint(tmp_path / "start.pth", input_size=42)
    node = NodeProcess({"checkpoint": str(start), "output_dir": str(tmp_path / "adapted"), "depth_node_name": "",
                        "camera_to_base": [0.0] * 6, "use_compressed": True}, tmp_path / "adaptation_node.log",
                       NAMESPACE, executable="adaptation_node")
    context = rclpy.Context()
    rclpy.init(context=context)
    peer = rclpy.create_node("bomb_peer", namespace=NAMESPACE, context=context)
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    image_pub = peer.create_publisher(CompressedImage, "image/compressed", reliable)
    odom_pub = peer.create_publisher(Odometry, "odom", reliable)
    try:
        deadline = time.monotonic() + 60
        while image_pub.get_subscription_count() == 0 or odom_pub.get_subscription_count() == 0:
            node.check_running()
            assert time.monotonic() < deadline, node.log()
            time.sleep(0.1)
        time.sleep(0.5)
        bomb = CompressedImage(format="png", data=large_png())  # 12 kB, 10000 x 10000 px decoded
        bomb.header.frame_id = "camera_optical_frame"
        for sec in (100, 101, 102):  # odometry around the image's stamp: the image is offered, i.e. decoded
            odom = Odometry(child_frame_id="base_link")
            odom.header.frame_id, odom.header.stamp.sec, odom.pose.pose.orientation.w = "odom", sec, 1.0
            odom_pub.publish(odom)
            if sec == 101:
                bomb.header.stamp.sec = sec
                image_pub.publish(bomb)
            time.sleep(0.2)
        expected = "compressed image (format 'png') is 10000x10000 = 100000000 px, more than the limit of 16777216 px"
        deadline = time.monotonic() + 30
        while expected not in node.log():
            node.check_running()
            assert time.monotonic() < deadline, node.log()
            time.sleep(0.1)
    finally:
        peer.destroy_node()
        context.try_shutdown()
        assert node.stop() == 0, node.log()[-3000:]


# ----------------------------------------------------------------------------------------------------------- tools
def _script(name: str, module: str | None = None) -> list[str]:
    """The console script ``name``, else its module ``depth_ros.tools.<module or name>``."""
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.is_file() else [sys.executable, "-m", f"depth_ros.tools.{module or name}"]


def test_infer_processes_every_good_image_of_a_folder_and_names_the_bad_one(tmp_path, checkpoint):
    import subprocess

    import cv2

    folder = tmp_path / "images"
    folder.mkdir()
    rgb = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "a.png"), rgb)
    cv2.imwrite(str(folder / "b.png"), rgb[:1, :1])  # 1 x 1 px: smaller than one network patch
    cv2.imwrite(str(folder / "c.png"), rgb)
    out = tmp_path / "out"
    result = subprocess.run([*_script("infer"), str(folder), "--checkpoint", str(checkpoint), "--device", "cpu",
                             "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert sorted(p.name for p in out.glob("*.npy")) == ["a_depth.npy", "c_depth.npy"]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"infer: error: 1 of 3 images skipped (the others are in {out}): {folder / 'b.png'}: ")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("value", "message"), [
    ("50:10", "frame range '50:10' selects no frame of the"),  # the string typed, not the base-60 number 3010
    ("70:", "expected str, got {70: None}: YAML read the text as dict; quote it to keep it as typed"),
])
def test_training_cli_keeps_a_frame_range_override_as_typed(shared_data, tmp_path, value, message):
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"encoder": "vits", "max_depth": 6.0},
        "data": {"path": str(shared_data / "7scenes_redkitchen"), "split": {"train_frames": "0:6",
                                                                           "val_frames": "70:72"}, "input_size": 42},
        "optim": {"epochs": 1, "batch_size": 2}, "run": {"output_dir": str(tmp_path / "run")}}))
    script = Path(__file__).resolve().parents[1] / "training" / "train_supervised.py"
    result = subprocess.run([sys.executable, str(script), "--config", str(config), "--set",
                             f"data.split.train_frames={value}"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert message in last and "3010" not in last, last
    assert not (tmp_path / "run" / "best.pth").exists()


def _umask_022():
    import os

    os.umask(0o022)


def test_training_states_are_shared_like_checkpoints(shared_data, tmp_path):
    import stat
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"encoder": "vits", "max_depth": 6.0},
        "data": {"path": str(shared_data / "7scenes_redkitchen"), "split": {"train_frames": "0:4",
                                                                           "val_frames": "70:72"}, "input_size": 42},
        "optim": {"epochs": 1, "batch_size": 2}, "run": {"output_dir": str(tmp_path / "run"),
                                                         "validate_at_start": False}}))
    script = Path(__file__).resolve().parents[1] / "training" / "train_supervised.py"
    result = subprocess.run([sys.executable, str(script), "--config", str(config), "--stop-after-steps", "1"],
                            capture_output=True, text=True, timeout=600, preexec_fn=_umask_022)
    assert result.returncode == 0, result.stderr[-2000:]
    (state,) = (tmp_path / "run" / "states").iterdir()
    modes = {p.relative_to(tmp_path / "run").as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in [state, *state.rglob("*")]}
    assert f"{state.relative_to(tmp_path / 'run').as_posix()}/model.safetensors" in modes
    assert modes == {name: 0o755 if (tmp_path / "run" / name).is_dir() else 0o644 for name in modes}


def test_an_exported_onnx_file_is_shared_like_checkpoints(tmp_path, checkpoint):
    import stat
    import subprocess

    out = tmp_path / "model.onnx"
    result = subprocess.run([*_script("depth_ros_export", "export"), str(checkpoint), str(out), "--image-size",
                             "98x70"], capture_output=True, text=True, timeout=600, preexec_fn=_umask_022)
    assert result.returncode == 0, result.stderr[-2000:]
    assert stat.S_IMODE(out.stat().st_mode) == 0o644 and not list(tmp_path.glob(".*.tmp"))
