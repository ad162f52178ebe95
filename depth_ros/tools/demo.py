"""``make demo``: the real depth_node over real ROS 2 on a real camera stream, with accuracy and latency figures.

Starts ``depth_node`` in its own process, plays a camera stream to it over ROS 2 (sensor_msgs/Image or
CompressedImage + CameraInfo, each frame stamped with the time it is sent), records ``depth``, ``points``,
``occupancy`` and ``/diagnostics``, and writes to the output folder (default ``demo_output/``):

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
scikit-image (see :func:`motorcycle_frame`), resized to 640 px wide, sent ``--frames`` times at ``--rate`` Hz as rgb8
Image + CameraInfo (best effort, like a camera driver). With ``--bag``, play_bag's player
(:class:`~depth_ros.tools.play_bag.BagPlayer`, see :class:`BagPlayback`) plays the bag's ``--image-topic`` (Image or
CompressedImage: the node gets ``use_compressed`` to match) and its CameraInfo from the bag's start, the recorded
messages byte for byte except the header stamp, with the recorded timing scaled so the images come at a mean
``--rate`` Hz (speed factor ``rate`` / the recorded mean image rate of the images played; ``--frames N``: the
first N images in log time). Each image and its CameraInfo are restamped now, with one stamp for the pair, so the
latency is measured against this clock; ground truth comes from ``--depth-topic`` (matched by recorded stamp) when
the bag has it. Messages go out in the bag's order: where each image was recorded just before its CameraInfo (the
7-Scenes bags, many drivers), the node may take an image before its CameraInfo arrives and use the previous one
(warned once in node.log), and answer the very first image with depth only. To play a bag unchanged, stamps
included, use ``play_bag`` itself.

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
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np

from depth_ros.frame import Frame
from depth_ros.ros.conversions import camera_info_msg, rgb_to_image_msg
from depth_ros.stamps import nearest_index
from depth_ros.testing import DISCOVERY_SETTLE, NodeHarness
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


def motorcycle_frame(width: int = 640) -> Frame:
    """The Middlebury 2014 Motorcycle left image with metric ground-truth depth, resized to ``width`` px.

    Depth from disparity: ``z = baseline * f / (d + doffs)`` (Middlebury 2014 convention) with ``d``, ``f`` and
    ``doffs`` at scikit-image's resolution (the full-resolution values scaled by 741 / 2964 = 1/4, as
    :meth:`PinholeCamera.resized` scales them); pixels without a finite disparity are NaN. The image is then resized
    with area averaging, the depth with nearest neighbours (no depths mixed across edges), the intrinsics with
    :meth:`PinholeCamera.resized`.

    Returns:
        :class:`Frame` of ``width`` x round(500 * width / 741) px, depth about 1 to 5 m.

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
    return Frame(rgb, camera.resized(width, height), 0, DEMO_FRAME_ID, depth=depth, name="Middlebury Motorcycle")


class BagPlayback(Mapping[int, Frame]):
    """A bag's camera played to depth_node by :class:`~depth_ros.tools.play_bag.BagPlayer`, and the frames it played.

    :meth:`play` publishes the bag's image topic and its CameraInfo as recorded (CDR bytes, original encoding) with
    the recorded timing, on the harness's own input topics, from the bag's start to just before image
    ``limit + 1``, sped up or slowed down by :meth:`speed`. Each image and the CameraInfo with its recorded stamp
    get one new stamp, the peer's clock (ROS time) when the first of the two is published, so the node pairs them
    and its latency from stamp is on this clock; the image's publication time goes into the harness's ``sent``.

    As a mapping: new stamp ns -> :class:`Frame` of each image played, decoded from the bag on access (rgb, the
    camera of its CameraInfo by :meth:`~depth_ros.tools.process_bag.BagCameraReader.camera_for`, and ground truth:
    the ``depth_topic`` message whose header stamp is within :data:`GROUND_TRUTH_MAX_DT` of the image's recorded
    stamp, by :func:`depth_ros.stamps.nearest_index`, else None). Use as a context manager (closes the bag).

    Args:
        path: the bag (see :class:`~depth_ros.tools.process_bag.BagCameraReader`).
        image_topic: sensor_msgs/Image or CompressedImage topic.
        info_topic: its CameraInfo (default: beside it).
        depth_topic: depth registered to the images (Image 32FC1 / 16UC1 or compressedDepth); None:
            :data:`DEFAULT_DEPTH_TOPIC` when the bag has it, else no ground truth.
        limit: play at most this many images (the first ones in log time); None: all.

    Attributes:
        bag: the open :class:`~depth_ros.tools.process_bag.BagCameraReader`.
        compressed: the images are CompressedImage (the node then needs ``use_compressed``).
        count: images to play.
        image_rate: their mean recorded rate in Hz (log times), None for a single image.
        duration: s of log time played from the bag's start (None: all of it), for BagPlayer.

    Raises:
        FileNotFoundError: no such bag. BagError: the bag cannot be opened or read (one line naming the bag).
        ValueError: a topic is missing or of the wrong type (the message lists the bag's topics), no image, or no
            CameraInfo for an image's frame_id (checked for the first image here, for the others on access).
    """

    def __init__(self, path: Path, image_topic: str, info_topic: str | None, depth_topic: str | None,
                 limit: int | None):
        from depth_ros.data.rosbag import COMPRESSED, IMAGE_TYPES
        from depth_ros.tools.process_bag import BagCameraReader

        self.bag = BagCameraReader(path, image_topic, info_topic)
        try:
            if depth_topic is None and self.bag.has_topic(DEFAULT_DEPTH_TOPIC):
                depth_topic = DEFAULT_DEPTH_TOPIC
            self._depth = [] if depth_topic is None else self.bag.index(depth_topic, IMAGE_TYPES)
            images = sorted(self.bag.index(image_topic, IMAGE_TYPES), key=lambda ref: ref.time_ns)
            if not images:
                raise ValueError(f"{self.bag.path}: {image_topic} has no message")
            first = self.bag.read(images[0])
            self._camera(first.header, self.bag.decode_color(images[0], first))
        except BaseException:
            self.bag.close()
            raise
        self._depth_stamps = np.array([ref.stamp for ref in self._depth])
        self._images = {}  # recorded stamp ns -> the image's MessageRef (the first one of a stamp)
        for ref in images:
            self._images.setdefault(ref.stamp_ns, ref)
        self.compressed = images[0].msgtype == COMPRESSED
        self.count = len(images) if limit is None else min(limit, len(images))
        first, last = images[0].time_ns, images[self.count - 1].time_ns
        self.image_rate = (self.count - 1) / ((last - first) / 1e9) if last > first else None
        self.duration = (None if self.count == len(images)
                         else (images[self.count].time_ns - self.bag.reader.start_time) / 1e9)
        self._new_stamps: dict[int, int] = {}  # recorded stamp ns -> new stamp ns (images and CameraInfo)
        self._recorded: dict[int, int] = {}  # new stamp ns -> recorded stamp ns, of the images played

    def speed(self, rate_hz: float) -> float:
        """BagPlayer's speed factor that plays the images at a mean ``rate_hz`` Hz (1 for a single image)."""
        return 1.0 if self.image_rate is None else rate_hz / self.image_rate

    def play(self, harness: NodeHarness, rate_hz: float):
        """Play the images and CameraInfo to the harness's node at a mean ``rate_hz`` Hz; returns the
        :class:`~depth_ros.tools.play_bag.PlaySummary`.

        The player's publishers live on ``harness.node`` until it is destroyed (reliable, which the node's
        best-effort inputs accept).

        Raises:
            TimeoutError: the node did not match the player's publishers within the harness's timeout.
            ChildProcessError: the node exited during playback (checked at each image). BagError: the bag cannot
                be read.
        """
        from depth_ros.tools.play_bag import BagPlayer

        bag = self.bag
        player = BagPlayer(bag, harness.node, rate=self.speed(rate_hz), duration=self.duration,
                           topics=[bag.image_topic, bag.info_topic],
                           remap={bag.image_topic: harness.image_pub.topic_name,
                                  bag.info_topic: harness.info_pub.topic_name},
                           rewrite=lambda topic, _, data: self._restamp(harness, topic, data))
        if not player.wait_for_subscribers(harness.timeout):
            raise TimeoutError(f"depth_node did not subscribe to the played {bag.image_topic} and {bag.info_topic} "
                               f"within {harness.timeout:.0f} s (node log: {harness.node_process.log_path})")
        time.sleep(DISCOVERY_SETTLE)  # the node's side of discovery, as NodeHarness waits for its own publishers
        summary = player.play()
        log.info("%s: %s", bag.path, summary.line())
        return summary

    def _restamp(self, harness: NodeHarness, topic: str, data: bytes) -> bytes:
        """BagPlayer's rewrite hook: the message with the new stamp of its recorded stamp (see the class)."""
        from depth_ros.tools.play_bag import header_stamp_ns, restamped

        recorded = header_stamp_ns(data)
        stamp = self._new_stamps.setdefault(recorded, harness.node.get_clock().now().nanoseconds)
        if topic == self.bag.image_topic:
            harness.check_running()
            self._recorded[stamp] = recorded
            harness.mark_sent(stamp)
        return restamped(data, stamp)

    def _camera(self, header, rgb: np.ndarray):
        camera = self.bag.camera_for(header, *rgb.shape[:2])
        if camera is None:
            raise ValueError(f"{self.bag.path}: no CameraInfo on {self.bag.info_topic} for frame "
                             f"'{header.frame_id}'")
        return camera

    def __getitem__(self, stamp: int) -> Frame:
        ref = self._images[self._recorded[stamp]]
        msg = self.bag.read(ref)
        match = nearest_index(self._depth_stamps, ref.stamp, GROUND_TRUTH_MAX_DT)
        depth = None
        if match is not None:
            depth_ref = self._depth[match]
            depth = self.bag.decode_depth(depth_ref, self.bag.read(depth_ref))
        rgb = self.bag.decode_color(ref, msg)
        return Frame(rgb, self._camera(msg.header, rgb), stamp, msg.header.frame_id, depth=depth, name=ref.topic)

    def __contains__(self, stamp) -> bool:  # without decoding
        return stamp in self._recorded

    def __iter__(self) -> Iterator[int]:
        return iter(self._recorded)

    def __len__(self) -> int:
        return len(self._recorded)

    def close(self) -> None:
        """Close the bag."""
        self.bag.close()

    def __enter__(self) -> BagPlayback:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _latency_summary(seconds: list[float]) -> dict[str, float]:
    values = np.asarray(seconds) * 1000.0
    return {"n": int(values.size), "median": float(np.median(values)), "p90": float(np.percentile(values, 90)),
            "mean": float(values.mean()), "max": float(values.max())}


def write_outputs(out_dir: Path, played: Mapping[int, Frame], harness: NodeHarness, config,
                  info: dict) -> dict:
    """Write the PNGs, the PLY and metrics.json from what the harness received; returns the metrics dictionary.

    Args:
        out_dir: output folder (exists).
        played: stamp ns -> frame of every frame sent (each frame looked up once per answer, the last one twice).
        harness: the node harness after the run.
        config: the node's NodeConfig (depth range for the metrics).
        info: run description stored in the JSON (input, checkpoint, ...).

    Raises:
        TimeoutError: no depth image came back at all.
        ValueError: ground truth that is not an integer scaling of the depth (:func:`depth_ros.metrics.reference_at`);
            a frame of ``played`` that cannot be decoded (:class:`BagPlayback`).
    """
    from depth_ros.geometry.transform import pose_matrix
    from depth_ros.metrics import mean_metrics

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
        latencies.append(received - harness.sent[stamp])
        depth, metrics = _write_frame(out_dir, index, msg, played[stamp], config)
        per_frame += [metrics] if metrics is not None else []
    if "points" in latest:
        _write_cloud(out_dir / "points.ply", latest["points"])
    grid, spec = _write_grid(out_dir / "occupancy.png", latest["occupancy"]) if "occupancy" in latest \
        else (None, None)
    last_frame = played[answered[-1][0]]
    save_overview(out_dir / "overview.png", last_frame.rgb, depth, last_frame.camera, grid, spec,
                  pose_matrix(config.camera_to_base), last_frame.depth,
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


def _write_frame(out_dir: Path, index: int, msg, frame: Frame, config) -> tuple[np.ndarray, dict | None]:
    """Save one answer's depth (and the frame's ground truth) as PNGs; (its depth, its metrics against the ground
    truth or None). Pixels the node left invalid (NaN outside [min_depth, max_depth]) are not scored."""
    from depth_ros.metrics import evaluate_depth, reference_at
    from depth_ros.ros.conversions import depth_image_to_array

    depth = depth_image_to_array(msg)
    truth = None if frame.depth is None else reference_at(frame.depth, depth.shape)
    shown = truth if truth is not None else depth
    valid = np.isfinite(shown)
    low, high = np.percentile(shown[valid], [2, 98]) if valid.any() else (0, 1)
    save_image(out_dir / f"frame_{index:04d}_depth.png", colorize_depth(depth, low, high))
    if truth is None:
        return depth, None
    save_image(out_dir / f"frame_{index:04d}_ground_truth.png", colorize_depth(truth, low, high))
    scored = np.isfinite(depth)
    try:
        return depth, evaluate_depth(np.where(scored, depth, 0.0), np.where(scored, truth, np.nan),
                                     min_depth=config.min_depth, max_depth=config.max_depth)
    except ValueError:  # no pixel valid in both
        return depth, None


def _write_cloud(path: Path, msg) -> None:
    from depth_ros.geometry.pointcloud import unpack_rgb
    from depth_ros.ros.conversions import cloud_msg_to_array

    cloud = cloud_msg_to_array(msg)
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1)
    save_ply(path, xyz, unpack_rgb(cloud["rgb"]) if "rgb" in cloud.dtype.names else None)


def _write_grid(path: Path, msg):
    """Save a nav_msgs/OccupancyGrid as a PNG; (its cells (H, W) int8, its GridSpec)."""
    from depth_ros.geometry.occupancy import GridSpec

    info = msg.info
    grid = np.asarray(msg.data, dtype=np.int8).reshape(info.height, info.width)
    save_image(path, occupancy_image(grid))
    return grid, GridSpec(info.resolution, info.width, info.height, info.origin.position.x, info.origin.position.y)


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
    from depth_ros.ros.params import NodeConfig

    _prepare(args)
    node_params = {"checkpoint": args.checkpoint, "input_size": args.input_size, "device": args.device,
                   "precision": args.precision, "colored": True, "use_tf": False}
    config = NodeConfig.from_values({"checkpoint": args.checkpoint, "input_size": args.input_size,
                                     "device": args.device, "precision": args.precision})
    with ExitStack() as stack:
        if args.bag is not None:
            bag = stack.enter_context(BagPlayback(args.bag, args.image_topic, args.info_topic, args.depth_topic,
                                                  args.frames))
            node_params["use_compressed"] = bag.compressed
            count, description = bag.count, str(args.bag)
            speed = f" (x{bag.speed(args.rate):.2f} the recorded timing)"
        else:
            bag, motorcycle, speed = None, motorcycle_frame(), ""
            count, description = args.frames or 10, "Middlebury 2014 Motorcycle (scikit-image)"
        args.out.mkdir(parents=True, exist_ok=True)
        log.info("starting depth_node (%s, input %s) on ROS_DOMAIN_ID %s; playing %d frames of %s at %.1f Hz%s",
                 args.checkpoint, f"{args.input_size} px" if args.input_size else "size of the checkpoint",
                 os.environ["ROS_DOMAIN_ID"], count, description, args.rate, speed)
        compressed = bag is not None and bag.compressed
        harness = stack.enter_context(NodeHarness(node_params, args.out / "node.log", NAMESPACE,
                                                  params_file=args.params, compressed=compressed,
                                                  timeout=args.timeout))
        if bag is not None:
            bag.play(harness, args.rate)
            played = bag
        else:
            played = _play_still(harness, motorcycle, count, args.rate)
        if not played:
            raise ValueError("no frames to play")
        save_image(args.out / "input.png", played[min(played)].rgb)
        _wait_for_outputs(harness, max(played))
        info = {"input": description, "checkpoint": args.checkpoint, "input_size": args.input_size,
                "device": args.device, "precision": args.precision, "rate_hz": args.rate}
        metrics = write_outputs(args.out, played, harness, config, info)
    _log_metrics(args, metrics)
    return metrics


def _prepare(args: argparse.Namespace) -> None:
    """Localhost-only DDS on the demo's domain with the shipped Fast DDS profile; the checkpoint resolved (a
    missing or unfetchable one ends the demo here, with one line)."""
    from depth_ros.checkpoints import resolve
    from depth_ros.ros.dds import use_shipped_fastdds_profile

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # before rclpy starts here or in the node
    os.environ.setdefault("ROS_DOMAIN_ID", DEFAULT_DOMAIN_ID)
    use_shipped_fastdds_profile()
    if args.checkpoint is None:
        args.checkpoint = default_checkpoint()
    else:
        resolve(args.checkpoint)


def _play_still(harness: NodeHarness, frame: Frame, count: int, rate: float) -> dict[int, Frame]:
    """Send one image ``count`` times at ``rate`` Hz, each with its CameraInfo and a new stamp; new stamp ns ->
    frame."""
    from std_msgs.msg import Header

    played = {}
    for _ in range(count):
        harness.check_running()
        started = time.monotonic()
        header = Header(frame_id=frame.frame_id, stamp=harness.now())
        stamp = harness.send(rgb_to_image_msg(frame.rgb, header), camera_info_msg(frame.camera, header),
                             stamp=header.stamp, settle=0.0)
        played[stamp] = frame
        time.sleep(max(0.0, started + 1.0 / rate - time.monotonic()))
    return played


def _wait_for_outputs(harness: NodeHarness, last: int) -> None:
    """Until the last frame's depth, a cloud and a grid have arrived and the diagnostics count every depth image."""
    harness.wait_until(lambda: last in harness.received["depth"]
                       and all(harness.received[topic] for topic in ("points", "occupancy")),
                       "the outputs of the last frame")
    harness.wait_until(lambda: int(harness.diagnostic_values().get("processed frames", 0))
                       >= len(harness.received["depth"]), "the node's diagnostics")


def _log_metrics(args: argparse.Namespace, metrics: dict) -> None:
    accuracy = metrics["accuracy"]
    latency = metrics["latency_ms"]["end_to_end"]
    log.info("model %s: %d of %d frames answered; end-to-end latency median %.0f ms, p90 %.0f ms%s; outputs in %s",
             args.checkpoint, metrics["frames_with_depth"], metrics["frames_published"], latency["median"],
             latency["p90"],
             "" if accuracy is None else
             f"; AbsRel {accuracy['abs_rel']:.3f}, RMSE {accuracy['rmse']:.3f} m, delta1 {accuracy['delta1']:.3f}",
             args.out)


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
    parser.add_argument("--frames", type=int, help="frames to play (default: 10 built-in, all of a bag; a bag's first "
                        "N images in log time)")
    parser.add_argument("--rate", type=float, default=2.0,
                        help="camera rate in Hz (default: %(default)s); a bag plays with its recorded timing scaled to "
                             "this mean image rate: speed factor = rate / the recorded mean rate of the images played")
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
