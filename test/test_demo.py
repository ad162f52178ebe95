"""The demo end to end: the real depth_node in its own process over real ROS 2 (localhost), on the built-in
Middlebury image and on the 7-Scenes bag (played by play_bag's player), with a random local checkpoint and a small
input size; its ground truth; and the one-line failure for a missing checkpoint."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from depth_ros import checkpoints
from depth_ros.tools.demo import BagPlayback, motorcycle_frame

BAG = "7scenes_redkitchen_20f_bag"
COMPRESSED_BAG = "7scenes_redkitchen_odom/bag"  # CompressedImage + compressedDepth, 30 Hz
TIMEOUT = 240  # s, bound of one demo run on a shared CPU


def _demo(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "depth_ros.tools.demo", "--device", "cpu", "--input-size", "70", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=dict(os.environ))


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                found.append(cmdline.parent.name)
        except OSError:  # the process ended meanwhile
            pass
    return found


def _check_outputs(out: Path, checkpoint: Path | str, result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    for name in ("input.png", "frame_0000_depth.png", "frame_0000_ground_truth.png", "points.ply", "occupancy.png",
                 "overview.png", "metrics.json", "node.log"):
        assert (out / name).is_file(), name
    assert not _processes_mentioning(str(checkpoint)), "the depth_node process outlived the demo"
    metrics = json.loads((out / "metrics.json").read_text())
    accuracy = metrics["accuracy"]
    assert accuracy["n_frames"] >= 1
    assert all(math.isfinite(accuracy[name]) for name in ("abs_rel", "rmse", "delta1"))
    assert accuracy["abs_rel"] > 0 and accuracy["rmse"] > 0 and 0 <= accuracy["delta1"] <= 1
    latency = metrics["latency_ms"]["end_to_end"]
    assert latency["n"] == metrics["frames_with_depth"] >= 1
    assert 0 < latency["median"] <= latency["p90"] <= latency["max"] < TIMEOUT * 1000
    assert metrics["node_diagnostics"]["end-to-end latency (ms)"] > 0
    assert metrics["node_diagnostics"]["processed frames"] >= metrics["frames_with_depth"]
    grid = cv2.imread(str(out / "occupancy.png"), cv2.IMREAD_GRAYSCALE)
    assert grid.shape == (200, 200) and set(np.unique(grid)) <= {0, 128, 255}
    import open3d as o3d

    cloud = o3d.io.read_point_cloud(str(out / "points.ply"))
    assert len(cloud.points) > 1000 and cloud.has_colors()
    return metrics


def test_motorcycle_ground_truth_follows_the_middlebury_calibration():
    from skimage.data import stereo_motorcycle

    native = motorcycle_frame(width=741)
    _, _, disparity = stereo_motorcycle()
    # scikit-image's docstring: f = 994.978 px, doffs = 31.086 px, baseline = 193.001 mm at its 741 x 500 px
    expected = 0.193001 * 994.978 / (disparity + 31.086)
    valid = np.isfinite(disparity)
    np.testing.assert_allclose(native.depth[valid], expected[valid], rtol=1e-5)
    assert np.isnan(native.depth[~valid]).all()
    assert native.camera.fx == pytest.approx(994.978, abs=1e-3) and native.depth.shape == (500, 741)
    frame = motorcycle_frame()
    assert frame.rgb.shape == (432, 640, 3) and frame.depth.shape == (432, 640)
    assert (frame.camera.width, frame.camera.height) == (640, 432)
    assert frame.camera.fx == pytest.approx(994.978 * 640 / 741, rel=1e-5)
    depth = frame.depth[np.isfinite(frame.depth)]
    assert depth.size > 0.9 * frame.depth.size and 1.0 < np.median(depth) < 4.0 and depth.max() < 6.0


def test_demo_on_the_builtin_image(checkpoint, tmp_path):
    out = tmp_path / "demo_output"
    result = _demo("--checkpoint", str(checkpoint), "--frames", "3", "--rate", "5", "--out", str(out))
    metrics = _check_outputs(out, checkpoint, result)
    assert metrics["frames_published"] == 3 and metrics["input"].startswith("Middlebury 2014 Motorcycle")


def test_bag_playback_plays_the_first_frames_at_the_mean_rate_asked(shared_data):
    with BagPlayback(shared_data / BAG, "/camera/color/image_raw", None, None, 4) as bag:
        assert bag.count == 4 and not bag.compressed and len(bag) == 0  # nothing played yet
        assert bag.image_rate == pytest.approx(10.0, rel=1e-6)  # 7-Scenes at 10 Hz, as recorded
        assert bag.speed(5.0) == pytest.approx(0.5, rel=1e-6)
        assert bag.duration == pytest.approx(0.4, abs=1e-9)  # up to the fifth image's log time, excluded
    with BagPlayback(shared_data / BAG, "/camera/color/image_raw", None, None, None) as bag:
        assert bag.count == 20 and bag.duration is None
    with pytest.raises(ValueError, match=r"no topic '/camera/nope'; the bag's topics: .*/camera/color/image_raw"):
        BagPlayback(shared_data / BAG, "/camera/nope", None, None, None)


def test_demo_on_a_bag(shared_data, checkpoint, tmp_path):
    """play_bag's player plays the first 4 images + CameraInfo at half the recorded 10 Hz, restamped now: every
    answered frame finds its ground truth by recorded stamp, and the node's latency from stamp is on this clock."""
    out = tmp_path / "demo_output"
    result = _demo("--bag", str(shared_data / BAG), "--checkpoint", str(checkpoint), "--frames", "4", "--rate", "5",
                   "--out", str(out))
    metrics = _check_outputs(out, checkpoint, result)
    assert metrics["frames_published"] == 4 and metrics["accuracy"]["n_frames"] == metrics["frames_with_depth"]
    assert metrics["rate_hz"] == 5.0 and "at 5.0 Hz (x0.50 the recorded timing)" in result.stderr
    played = re.search(r"played 8 messages \(/depth_demo/camera_info 4, /depth_demo/image 4\) in ([0-9.]+) s wall",
                       result.stderr)
    assert played and float(played.group(1)) >= 0.59  # 3 recorded intervals of 0.1 s at speed 0.5
    assert 0 < metrics["node_diagnostics"]["latency from stamp (ms)"] < TIMEOUT * 1000  # recorded stamps: years


def test_demo_on_a_compressed_bag(shared_data, checkpoint, tmp_path):
    """CompressedImage input: the node is started with use_compressed and reads what the player publishes; ground
    truth from compressedDepth."""
    out = tmp_path / "demo_output"
    result = _demo("--bag", str(shared_data / COMPRESSED_BAG), "--image-topic", "/camera/color/image_raw/compressed",
                   "--depth-topic", "/camera/depth/image_raw/compressedDepth", "--checkpoint", str(checkpoint),
                   "--frames", "2", "--rate", "5", "--out", str(out))
    metrics = _check_outputs(out, checkpoint, result)
    assert metrics["frames_published"] == 2 and metrics["accuracy"]["n_frames"] == metrics["frames_with_depth"]
    assert "reading /depth_demo/image/compressed" in (out / "node.log").read_text()
    assert "/depth_demo/image/compressed 2)" in result.stderr


def test_offline_fresh_machine_runs_the_bundled_model_and_says_so(tmp_path):
    """`make demo` on a fresh machine without network: no Hugging Face cache, hub offline -> the bundled model, one
    warning line naming it and how to get the official weights; every output written, overview figure included."""
    out = tmp_path / "demo_output"
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    command = [sys.executable, "-m", "depth_ros.tools.demo", "--device", "cpu", "--frames", "2", "--rate", "5",
               "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    metrics = _check_outputs(out, checkpoints.BUNDLED_MODEL, result)  # the node is given the model id
    assert metrics["checkpoint"] == "depth-ros-tiny-indoor"
    warnings = [line for line in result.stderr.splitlines() if "running the bundled depth-ros-tiny-indoor" in line]
    assert len(warnings) == 1 and "hf download depth-anything/Depth-Anything-V2-Metric-Hypersim-Small" in warnings[0]
    assert "model depth-ros-tiny-indoor:" in result.stderr  # the summary names the model that ran
    overview = cv2.imread(str(out / "overview.png"))
    assert overview is not None and overview.shape[0] > 500 and overview.shape[1] > 1000


def test_an_unavailable_model_id_given_explicitly_is_not_replaced(tmp_path):
    out = tmp_path / "demo_output"
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "depth_ros.tools.demo", "--checkpoint", "da2-metric-indoor-small",
                             "--out", str(out)], capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert result.returncode == 1 and "bundled" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("demo: error: model 'da2-metric-indoor-small' is not")
    assert not out.exists()


def test_missing_checkpoint_is_one_line_before_anything_starts(tmp_path):
    out = tmp_path / "demo_output"
    result = _demo("--checkpoint", str(tmp_path / "missing.pth"), "--out", str(out))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"demo: error: {tmp_path / 'missing.pth'}: no such checkpoint file")
    assert not out.exists()


def test_node_start_up_failure_is_one_line(checkpoint, tmp_path):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(checkpoint.read_bytes()[:4096])
    result = _demo("--checkpoint", str(truncated), "--out", str(tmp_path / "demo_output"), "--timeout", "120")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("demo: error:")]
    assert len(errors) == 1 and "depth_node exited with code 1" in errors[0] and "truncated.pth" in errors[0]
    assert "Traceback" not in result.stderr
    assert not _processes_mentioning(str(truncated))
