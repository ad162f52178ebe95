"""``make demo``: the real depth_node over real ROS 2 on a real camera stream, with accuracy and latency figures.

Starts ``depth_node`` in its own process, plays a camera stream to it over ROS 2 (sensor_msgs/Image rgb8 +
CameraInfo, best effort like a camera driver, each frame stamped with the time it is sent), records ``depth``,
``points``, ``occupancy`` and ``/diagnostics``, and writes to the output folder (default ``demo_output/``):

- ``frame_NNNN_depth.png`` per received depth image (colourised; ``frame_NNNN_ground_truth.png`` beside it, same
  colour range, when the input has ground truth), ``input.png`` (the first frame played);
- ``points.ply`` (the last ``points`` cloud, coloured, camera optical frame), ``occupancy.png`` (the last grid:
  black occupied, white free, grey unknown; x to the right, y up, as RViz shows it);
- ``overview.png``: the last frame's input, depth (colour bar in metres), ground truth and error when known, and
  the occupancy grid with metre axes, the camera's position and field of view;
- ``metrics.json``: AbsRel, RMSE, delta1 (and the other depth_ros.metrics figures) of the received depth against
  the ground truth, end-to-end latency (receipt of ``depth`` minus publication of its image, in this process) and
  the node's own diagnostics;
- ``node.log``: the node's output.

Input: by default the Middlebury 2014 "Motorcycle" left image with its ground-truth disparity, as shipped by
scikit-image (see :func:`motorcycle_frame`), resized to 640 px wide and played ``--frames`` times; with ``--bag`` the
images + CameraInfo of any ROS 1 / ROS 2 bag (ground truth from ``--depth-topic`` when the bag has it), decoded and
sent again as rgb8 frames stamped now (the latency is measured against this clock); to play a bag's recorded messages
unchanged, with their stamps and timing, use ``play_bag`` (:mod:`depth_ros.tools.play_bag`).

Network safety: every process runs with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and ``ROS_DOMAIN_ID`` (42 unless
set); the shipped Fast DDS profile lets the large best-effort images through (config/fastdds_profile.xml).

Example::

    make demo                                   # built-in input, official metric indoor Small model (offline:
                                                # the bundled depth-ros-tiny-indoor)
    python -m depth_ros.tools.demo --bag ../shared/data/7scenes_redkitchen_20f_bag --checkpoint model.pth
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from depth_ros.ros.conversions import camera_info_msg, rgb_to_image_msg, stamp_ns
from depth_ros.testing import NodeHarness
from depth_ros.tools.cli import run_cli
from depth_ros.visualize import colorize_depth, occupancy_image, save_image, save_overview, save_ply

log = logging.getLogger(__name__)

DEFAULT_DOMAIN_ID = "42"
NAMESPACE = "/depth_demo"
DEMO_FRAME_ID = "demo_camera_optical_frame"
DEFAULT_DEPTH_TOPIC = "/camera/depth/image_raw"
GROUND_TRUTH_MAX_DT = 0.02  # s between an image and its ground-truth depth, as RosbagRGBD pairs them

# Middlebury 2014 "Motorcycle" (perfect rectification) calibration at full resolution, 2964 x 2000 px (Scharstein et
# al., GCPR 2014): cam0 focal length and principal point in px, disparity offset doffs = cx1 - cx0 in px, baseline
# in m. scikit-image ships the images down-sampled by 4 (741 x 500 px; its docstring lists these values divided by 4,
# which hold for its disparity map).
MOTORCYCLE_FULL = {"f": 3979.911, "cx": 1244.772, "cy": 1019.507, "doffs": 124.343, "baseline": 0.193001,
                   "width": 2964, "height": 2000}


@dataclass
class DemoFrame:
    """One frame to play.

    Attributes:
        rgb: (H, W, 3) uint8 RGB.
        camera: its intrinsics (PinholeCamera).
        frame_id: optical frame of the camera.
        ground_truth: (H, W) float32 metres, NaN where unknown; None without ground truth.
    """

    rgb: np.ndarray
    camera: object
    frame_id: str
    ground_truth: np.ndarray | None


def motorcycle_frame(width: int = 640) -> DemoFrame:
    """The Middlebury 2014 Motorcycle left image with metric ground-truth depth, resized to ``width`` px.

    Depth from disparity: ``z = baseline * f / (d + doffs)`` (Middlebury 2014 convention) with ``d``, ``f`` and
    ``doffs`` at scikit-image's resolution (the full-resolution values scaled by 741 / 2964 = 1/4, as
    :meth:`PinholeCamera.resized` scales them); pixels without a finite disparity are NaN. The image is then resized
    with area averaging, the depth with nearest neighbours (no depths mixed across edges), the intrinsics with
    :meth:`PinholeCamera.resized`.

    Returns:
        :class:`DemoFrame` of ``width`` x round(500 * width / 741) px, depth about 1 to 5 m.

    Raises:
        ValueError: scikit-image is not installed (the message says how to install it).
    """
    try:
        from skimage.data import stereo_motorcycle
    except ImportError as exc:
        raise ValueError("the built-in demo input needs scikit-image: pip install scikit-image (or play a bag with "
                         "--bag)") from exc

    from depth_ros.geometry.camera import PinholeCamera

    left, _, disparity = stereo_motorcycle()
    full = MOTORCYCLE_FULL
    camera = PinholeCamera(fx=full["f"], fy=full["f"], cx=full["cx"], cy=full["cy"], width=full["width"],
                           height=full["height"]).resized(left.shape[1], left.shape[0])
    doffs = full["doffs"] * left.shape[1] / full["width"]
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = (full["baseline"] * camera.fx / (disparity.astype(np.float64) + doffs)).astype(np.float32)
    depth[~np.isfinite(disparity) | ~(depth > 0)] = np.nan
    height = round(left.shape[0] * width / left.shape[1])
    rgb = cv2.resize(left, (width, height), interpolation=cv2.INTER_AREA)
    depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
    return DemoFrame(rgb, camera.resized(width, height), DEMO_FRAME_ID, depth)


def bag_frames(path: Path, image_topic: str, info_topic: str | None, depth_topic: str | None,
               limit: int | None) -> tuple[Iterator[DemoFrame], int]:
    """Frames of a bag's image topic with its CameraInfo and ground truth from ``depth_topic``.

    Args:
        path: the bag (see :class:`~depth_ros.tools.process_bag.BagCameraReader`).
        image_topic: sensor_msgs/Image or CompressedImage topic.
        info_topic: its CameraInfo (default: beside it).
        depth_topic: depth registered to the images (Image 32FC1 / 16UC1 or compressedDepth); None:
            :data:`DEFAULT_DEPTH_TOPIC` when the bag has it, else no ground truth.
        limit: play at most this many frames; None: all.

    Returns:
        (iterator of :class:`DemoFrame`, number of frames it yields). Frames whose stamp has no depth image within
        :data:`GROUND_TRUTH_MAX_DT` have no ground truth (stamps matched by :func:`depth_ros.stamps.nearest_index`).

    Raises:
        BagError: the bag cannot be opened or read (one line naming the bag).
        ValueError: a topic is missing or of the wrong type (the message lists the bag's topics), or frames without
            CameraInfo (the node would publish depth only).
    """
    from depth_ros.data.rosbag import IMAGE_TYPES, BagReader
    from depth_ros.stamps import nearest_index
    from depth_ros.tools.process_bag import BagCameraReader

    reader = BagCameraReader(path, image_topic, info_topic)
    depth_bag, depth_refs = None, []
    try:
        if depth_topic is None and reader.has_topic(DEFAULT_DEPTH_TOPIC):
            depth_topic = DEFAULT_DEPTH_TOPIC
        if depth_topic is not None:  # a reader of its own: random access beside the image stream
            depth_bag = BagReader(path)
            depth_refs = depth_bag.index(depth_topic, IMAGE_TYPES)
    except BaseException:
        reader.close()
        if depth_bag is not None:
            depth_bag.close()
        raise
    depth_stamps = np.array([ref.stamp for ref in depth_refs])
    count = reader.frame_count if limit is None else min(limit, reader.frame_count)

    def frames() -> Iterator[DemoFrame]:
        with reader, depth_bag or nullcontext():
            for index, (_, frame) in enumerate(reader.frames()):
                if index == count:
                    return
                if frame.camera is None:
                    raise ValueError(f"{path}: no CameraInfo on {reader.info_topic} for frame "
                                     f"'{frame.header.frame_id}'")
                match = nearest_index(depth_stamps, stamp_ns(frame.header) * 1e-9, GROUND_TRUTH_MAX_DT)
                depth = None
                if match is not None:
                    ref = depth_refs[match]
                    depth = depth_bag.decode_depth(ref, depth_bag.read(ref))
                yield DemoFrame(frame.rgb, frame.camera, frame.header.frame_id, depth)

    return frames(), count


def _latency_summary(seconds: list[float]) -> dict[str, float]:
    values = np.asarray(seconds) * 1000.0
    return {"n": int(values.size), "median": float(np.median(values)), "p90": float(np.percentile(values, 90)),
            "mean": float(values.mean()), "max": float(values.max())}


def write_outputs(out_dir: Path, played: dict[int, DemoFrame], harness: NodeHarness, config, info: dict) -> dict:
    """Write the PNGs, the PLY and metrics.json from what the harness received; returns the metrics dictionary.

    Args:
        out_dir: output folder (exists).
        played: stamp ns -> frame of every frame sent.
        harness: the node harness after the run.
        config: the node's NodeConfig (depth range for the metrics).
        info: run description stored in the JSON (input, checkpoint, ...).

    Raises:
        TimeoutError: no depth image came back at all.
        ValueError: ground truth that is not an integer scaling of the depth (:func:`depth_ros.metrics.reference_at`).
    """
    from depth_ros.geometry.occupancy import GridSpec
    from depth_ros.geometry.pointcloud import unpack_rgb
    from depth_ros.geometry.transform import pose_matrix
    from depth_ros.metrics import evaluate_depth, mean_metrics, reference_at
    from depth_ros.ros.conversions import cloud_msg_to_array, depth_image_to_array

    answered = sorted((stamp, harness.arrived["depth"][stamp], msg)
                      for stamp, msg in harness.received["depth"].items() if stamp in played)
    latest = {topic: messages[max(messages)] for topic, messages in harness.received.items() if messages}
    diagnostics = harness.diagnostic_values()
    if not answered:
        raise TimeoutError(f"depth_node answered none of the {len(played)} frames (node log: {out_dir / 'node.log'})")
    for stale in out_dir.glob("frame_*.png"):
        stale.unlink()
    per_frame, latencies = [], []
    for index, (stamp, received, msg) in enumerate(answered):
        frame = played[stamp]
        latencies.append(received - harness.sent[stamp])
        depth = depth_image_to_array(msg)
        truth = frame.ground_truth
        if truth is not None:
            truth = reference_at(truth, depth.shape)
        valid = np.isfinite(truth) if truth is not None else np.isfinite(depth)
        low, high = np.percentile((truth if truth is not None else depth)[valid], [2, 98]) if valid.any() else (0, 1)
        save_image(out_dir / f"frame_{index:04d}_depth.png", colorize_depth(depth, low, high))
        if truth is not None:
            save_image(out_dir / f"frame_{index:04d}_ground_truth.png", colorize_depth(truth, low, high))
            # pixels the node left invalid (NaN outside [min_depth, max_depth]) are not scored
            scored = np.isfinite(depth)
            try:
                per_frame.append(evaluate_depth(np.where(scored, depth, 0.0), np.where(scored, truth, np.nan),
                                                min_depth=config.min_depth, max_depth=config.max_depth))
            except ValueError:  # no pixel valid in both
                pass
    if "points" in latest:
        cloud = cloud_msg_to_array(latest["points"])
        xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1)
        colors = unpack_rgb(cloud["rgb"]) if "rgb" in cloud.dtype.names else None
        save_ply(out_dir / "points.ply", xyz, colors)
    grid = spec = None
    if "occupancy" in latest:
        info_msg = latest["occupancy"].info
        grid = np.asarray(latest["occupancy"].data, dtype=np.int8).reshape(info_msg.height, info_msg.width)
        spec = GridSpec(info_msg.resolution, info_msg.width, info_msg.height, info_msg.origin.position.x,
                        info_msg.origin.position.y)
        save_image(out_dir / "occupancy.png", occupancy_image(grid))
    last_frame = played[answered[-1][0]]
    save_overview(out_dir / "overview.png", last_frame.rgb, depth, last_frame.camera, grid, spec,
                  pose_matrix(config.camera_to_base), last_frame.ground_truth,
                  title=f"{info['checkpoint']}: {info['input']}")
    metrics = {
        **info,
        "frames_published": len(played),
        "frames_with_depth": len(answered),
        "accuracy": mean_metrics(per_frame) if per_frame else None,
        "latency_ms": {"end_to_end": _latency_summary(latencies)},
        "node_diagnostics": {key: _number(value) for key, value in diagnostics.items()},
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def default_checkpoint() -> str:
    """The model the demo runs when none is given: the official default (Hugging Face cache, then hub), else the
    bundled model, announced by one warning line (the demo must run on a fresh offline machine).

    Only the demo falls back: depth_node and the other tools run the model they are given or stop with an error.
    """
    from depth_ros.checkpoints import BUNDLED_MODEL, DEFAULT_MODEL, OFFICIAL_MODELS, CheckpointError, resolve

    try:
        resolve(DEFAULT_MODEL)
        return DEFAULT_MODEL
    except CheckpointError:
        official = OFFICIAL_MODELS[DEFAULT_MODEL]
        log.warning("%s is not cached and cannot be downloaded: running the bundled %s instead, a small PackNet "
                    "trained on one indoor scene (7-Scenes RedKitchen, non-commercial research use only; model card "
                    "depth_ros/weights/%s.md); for the official weights run `hf download %s %s` on a connected "
                    "machine, or pass --checkpoint", DEFAULT_MODEL, BUNDLED_MODEL, BUNDLED_MODEL, official.repo_id,
                    official.filename)
        return BUNDLED_MODEL


def run_demo(args: argparse.Namespace) -> dict:
    """Run the demo described by the parsed command line; returns the metrics written to metrics.json.

    Raises:
        CheckpointError: the checkpoint cannot be found or fetched (checked before anything starts).
        ValueError: a bad bag, topic or parameter.
        ChildProcessError: the node exited (its last error line); TimeoutError: a bounded wait ran out.
    """
    from std_msgs.msg import Header

    from depth_ros.checkpoints import resolve
    from depth_ros.ros.dds import use_shipped_fastdds_profile
    from depth_ros.ros.params import NodeConfig

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # before rclpy starts here or in the node
    os.environ.setdefault("ROS_DOMAIN_ID", DEFAULT_DOMAIN_ID)
    use_shipped_fastdds_profile()
    if args.checkpoint is None:
        args.checkpoint = default_checkpoint()
    else:
        resolve(args.checkpoint)  # a missing / unfetchable checkpoint ends the demo here, with one line
    node_params = {"checkpoint": args.checkpoint, "input_size": args.input_size, "device": args.device,
                   "precision": args.precision, "colored": True, "use_tf": False}
    config = NodeConfig.from_values({"checkpoint": args.checkpoint, "input_size": args.input_size,
                                     "device": args.device, "precision": args.precision})
    if args.bag is not None:
        frames, count = bag_frames(args.bag, args.image_topic, args.info_topic, args.depth_topic, args.frames)
        description = str(args.bag)
    else:
        motorcycle = motorcycle_frame()
        count = args.frames or 10
        frames, description = (motorcycle for _ in range(count)), "Middlebury 2014 Motorcycle (scikit-image)"
    args.out.mkdir(parents=True, exist_ok=True)
    log.info("starting depth_node (%s, input %s) on ROS_DOMAIN_ID %s; playing %d frames of %s at %.1f Hz",
             args.checkpoint, f"{args.input_size} px" if args.input_size else "size of the checkpoint",
             os.environ["ROS_DOMAIN_ID"], count, description, args.rate)
    with NodeHarness(node_params, args.out / "node.log", NAMESPACE, params_file=args.params,
                     timeout=args.timeout) as harness:
        played: dict[int, DemoFrame] = {}
        for index, frame in enumerate(frames):
            harness.check_running()
            started = time.monotonic()
            header = Header(frame_id=frame.frame_id, stamp=harness.now())
            stamp = harness.send(rgb_to_image_msg(frame.rgb, header), camera_info_msg(frame.camera, header),
                                 stamp=header.stamp, settle=0.0)
            played[stamp] = frame
            time.sleep(max(0.0, started + 1.0 / args.rate - time.monotonic()))
            if index == 0:
                save_image(args.out / "input.png", frame.rgb)
        if not played:
            raise ValueError("no frames to play")
        last = max(played)
        harness.wait_until(lambda: last in harness.received["depth"]
                           and all(harness.received[topic] for topic in ("points", "occupancy")),
                           "the outputs of the last frame")
        harness.wait_until(lambda: int(harness.diagnostic_values().get("processed frames", 0))
                           >= len(harness.received["depth"]), "the node's diagnostics")
        info = {"input": description, "checkpoint": args.checkpoint, "input_size": args.input_size,
                "device": args.device, "precision": args.precision, "rate_hz": args.rate}
        metrics = write_outputs(args.out, played, harness, config, info)
    accuracy = metrics["accuracy"]
    latency = metrics["latency_ms"]["end_to_end"]
    log.info("model %s: %d of %d frames answered; end-to-end latency median %.0f ms, p90 %.0f ms%s; outputs in %s",
             args.checkpoint, metrics["frames_with_depth"], metrics["frames_published"], latency["median"],
             latency["p90"],
             "" if accuracy is None else
             f"; AbsRel {accuracy['abs_rel']:.3f}, RMSE {accuracy['rmse']:.3f} m, delta1 {accuracy['delta1']:.3f}",
             args.out)
    return metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bag", type=Path, help="play this bag's images + CameraInfo instead of the built-in input")
    parser.add_argument("--checkpoint", help="metric checkpoint file or model id (default: the official "
                        "da2-metric-indoor-small, or the bundled depth-ros-tiny-indoor when that cannot be fetched)")
    parser.add_argument("--input-size", type=int, default=0,
                        help="network short side in px, multiple of 14 (default 0: the checkpoint's training size)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--params", type=Path, help="depth_node parameters file (the demo's options override it)")
    parser.add_argument("--frames", type=int, help="frames to play (default: 10 built-in, all of a bag)")
    parser.add_argument("--rate", type=float, default=2.0, help="camera rate in Hz (default: %(default)s)")
    parser.add_argument("--image-topic", default="/camera/color/image_raw", help="bag image topic")
    parser.add_argument("--info-topic", help="bag CameraInfo topic (default: camera_info beside the image topic)")
    parser.add_argument("--depth-topic", help="bag ground-truth depth topic, registered to the image (default: "
                        f"{DEFAULT_DEPTH_TOPIC} when the bag has it)")
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound of each wait in s (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or (args.frames is not None and args.frames < 1):
        parser.error("--rate must be > 0 and --frames >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def run() -> None:
        run_demo(args)

    return run_cli("demo", run)


if __name__ == "__main__":
    sys.exit(main())
