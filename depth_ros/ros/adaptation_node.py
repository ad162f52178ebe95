"""adaptation_node: online self-supervised adaptation of depth_node's model from the robot's own motion (rclpy).

Topics (relative names, the namespace conventions of depth_node):

- in: ``image`` (sensor_msgs/Image) or, with ``use_compressed``, ``image/compressed``; ``camera_info``; the pose
  source: with ``pose_source: odom`` (default) ``odom`` (nav_msgs/Odometry: the base's pose in the odometry frame,
  REP 105) and ``/tf_static`` (tf2_msgs/TFMessage, where a ROS distro provides the type) for the base -> camera
  extrinsic, else the ``camera_to_base`` parameter; with ``pose_source: tf``, tf2 alone (tf2_ros, a ROS distro):
  the transform ``fixed_frame`` -> the image's frame at the image stamp; with
  ``use_reference_depth``, ``reference_depth`` (32FC1 / 16UC1 registered depth, for a live AbsRel only: it is never
  trained on).
- out: ``/diagnostics``; files: ``output_dir/latest.pth`` (the last published weights, an ordinary checkpoint);
  the ``checkpoint`` parameter of ``depth_node_name`` is set to that file after each publish (a SetParameters
  request), so depth_node swaps models between two frames.
- service ``~/reset`` (std_srvs/Trigger): back to the starting checkpoint, which is published again; a failure
  (e.g. ``output_dir`` cannot be written) answers ``success: false`` with the reason.

Every callback (subscriptions, timer, service) catches its errors: logged (throttled), that message dropped or that
request answered with ``success: false``, the node goes on (docs/robustness.md).

The camera pose of an image is ``T_odom_base(t) @ T_base_camera``, with the odometry interpolated at the image stamp
(linear translation, slerp rotation; :class:`~depth_ros.geometry.transform.PoseTrajectory`). An image waits for the
odometry after its stamp (at most ``odom_tolerance`` s beyond the newest odometry sample); one without odometry
around its stamp is rejected and counted. With ``pose_source: tf`` it is tf2's ``T_fixed_camera`` at the stamp (tf2
interpolates); an image waits until tf2 can give it, and is rejected once a later image's pose is known. The
learning itself is :class:`depth_ros.learning.adaptation.OnlineAdapter` (keyframes, replay, guards); it runs in a
background thread at most ``max_updates_per_second`` times per second with ``threads`` torch threads, so a
depth_node on the same machine keeps its rate.

Parameters: :class:`AdaptationNodeConfig` (documented in config/adaptation.yaml).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import Trigger

from depth_ros.data.images import MAX_IMAGE_PIXELS
from depth_ros.estimator import DepthEstimator
from depth_ros.frame import CameraInfoCache, NoCameraError
from depth_ros.geometry.camera import PinholeCamera
from depth_ros.geometry.transform import PoseLookupError, pose_matrix, pose_msg_to_matrix
from depth_ros.learning.adaptation import AdaptationConfig, OnlineAdapter
from depth_ros.learning.config import TRAINABLE
from depth_ros.metrics import evaluate_depth, reference_at
from depth_ros.ros.conversions import (
    DEPTH_TRANSPORTS,
    compressed_to_rgb,
    depth_msg_to_array,
    depth_subscription,
    image_to_rgb,
    stamp_ns,
)
from depth_ros.ros.params import (
    DEFAULT_CAMERA_TO_BASE,
    MIN_IMAGE_PIXELS,
    ConfigError,
    ParameterTable,
    _param,
    declare_and_load,
)
from depth_ros.ros.pose_sources import CameraPoses, OdometryPoses, TfPoses, start_tf
from depth_ros.ros.runner import run_node
from depth_ros.ros.throttle import ThrottledLog, trigger_failed
from depth_ros.stamps import StampedBuffer

PENDING_IMAGES = 30  # images waiting for odometry (or tf2) after their stamp
POSE_SOURCES = ("odom", "tf")
REFERENCE_FRAMES = 4  # frames with reference depth kept for the live AbsRel of the published model
REFERENCE_MIN_DEPTH = 0.1  # m; reference depth below it is not scored (depth_node's default min_depth)


@dataclass(frozen=True)
class AdaptationNodeConfig(ParameterTable):
    """Typed, validated parameters of ``adaptation_node``; the learning ones are :class:`AdaptationConfig`'s."""

    NODE_NAME = "adaptation_node"
    PARAMS_FILE = "config/adaptation.yaml"

    checkpoint: str = _param("", "Starting checkpoint (file or model id): the model depth_node starts with.")
    output_dir: str = _param("adapted", "Folder of the published weights; latest.pth there is the newest.")
    depth_node_name: str = _param(
        "depth_node", "depth_node to hand published weights to (its checkpoint parameter); empty: none.")
    device: str = _param("cpu", "Torch device for training: cpu, cuda, cuda:N.")
    threads: int = _param(1, "Torch CPU threads for training (bounds the share of the CPU taken from depth_node).")
    input_size: int = _param(0, "px. Network input short side, multiple of 14; 0: the checkpoint's training size.")
    use_compressed: bool = _param(False, "Subscribe to image/compressed instead of image.")
    use_reference_depth: bool = _param(False, "Score the published model on reference_depth (live AbsRel).")
    reference_transport: str = _param(
        "raw", "reference_depth transport: raw (Image 32FC1 m / 16UC1 mm) or compressedDepth (image_transport, "
        "reference_depth/compressedDepth).")
    use_rectified: bool = _param(True, "Intrinsics from CameraInfo P (rectified images) instead of K.")
    max_image_pixels: int = _param(
        MAX_IMAGE_PIXELS, "px. Largest width x height of an input image (compressed: read from its header before "
        "decoding), as depth_node's; larger images are dropped. Also bounds reference depth images.")
    pose_source: str = _param(
        "odom", "Camera poses from odom (the odom topic + the camera extrinsic) or tf (tf2 alone: fixed_frame -> "
        "the image's frame; needs tf2_ros, i.e. a ROS 2 distro).")
    fixed_frame: str = _param("odom", "pose_source tf: the frame the camera poses are taken in (REP 105 odom).")
    camera_to_base: tuple = _param(
        DEFAULT_CAMERA_TO_BASE, "[x, y, z, roll, pitch, yaw] (m, rad) of the camera optical frame in the odometry "
        "child frame, used when /tf_static has no transform chain for it.")
    odom_tolerance: float = _param(0.05, "s an image stamp may lie beyond the odometry samples around it.")
    camera_info_tolerance: float = _param(
        0.1, "s. CameraInfo with another stamp than the image is used when none matches; warn once if further apart. "
        "Reference depth must lie within this of the image's stamp.")
    max_updates_per_second: float = _param(1.0, "Hz. Upper bound of the training rate.")
    diagnostics_period: float = _param(1.0, "s between /diagnostics messages.")
    min_translation: float = _param(0.03, "m the camera must move between keyframes.")
    max_rotation: float = _param(15.0, "deg the camera may rotate between keyframes.")
    max_speed: float = _param(3.0, "m/s. A faster pose change between two frames is a pose jump (rejected).")
    max_angular_speed: float = _param(180.0, "deg/s. Likewise for rotation.")
    buffer_size: int = _param(256, "Replay buffer capacity in samples (reservoir: uniform over the whole run).")
    holdout_every: int = _param(8, "Every n-th sample is held out for the guards.")
    holdout_size: int = _param(8, "Held-out samples kept (the newest).")
    batch_size: int = _param(4, "Samples per update: the newest plus replayed ones.")
    trainable: str = _param("scale", "What adapts, as the trainers: scale (one global depth factor, weights "
                                     "fixed), norms_biases, head, lora or full.")
    lr: float = _param(1e-2, "Learning rate: a log-scale step for scale (1e-2: ~1 % per update); ~1e-4 for the "
                             "weight groups (the head gets 10x).")
    ema_decay: float = _param(0.9, "Weight of the old average per update in the published moving average.")
    check_every: int = _param(10, "Updates between two guarded publish attempts.")
    divergence_factor: float = _param(1.5, "Roll back when held-out loss exceeds the start's by this factor.")

    def adaptation(self) -> AdaptationConfig:
        """The learning parameters."""
        return AdaptationConfig(
            min_translation=self.min_translation, max_rotation=self.max_rotation, max_speed=self.max_speed,
            max_angular_speed=self.max_angular_speed, buffer_size=self.buffer_size, holdout_every=self.holdout_every,
            holdout_size=self.holdout_size, batch_size=self.batch_size, trainable=self.trainable, lr=self.lr,
            ema_decay=self.ema_decay, min_updates_between_checks=self.check_every,
            divergence_factor=self.divergence_factor)

    def _validate(self) -> None:
        output_problem = folder_problem(self.output_dir)
        checks = [
            (self.checkpoint != "", "checkpoint", "must name the starting checkpoint file or model id"),
            (self.output_dir != "", "output_dir", "must name a folder"),
            (output_problem is None, "output_dir", output_problem),
            (self.threads >= 1, "threads", "must be >= 1"),
            (self.max_image_pixels >= MIN_IMAGE_PIXELS, "max_image_pixels",
             f"must be >= {MIN_IMAGE_PIXELS} px (one 14 x 14 network patch)"),
            (self.input_size >= 0, "input_size", "must be 0 (the checkpoint's) or a positive number of px"),
            (len(self.camera_to_base) == 6, "camera_to_base", "must be [x, y, z, roll, pitch, yaw]"),
            (self.odom_tolerance > 0, "odom_tolerance", "must be > 0 s"),
            (self.camera_info_tolerance >= 0, "camera_info_tolerance", "must be >= 0 s"),
            (self.pose_source in POSE_SOURCES, "pose_source", f"must be one of {', '.join(POSE_SOURCES)}"),
            (self.fixed_frame != "", "fixed_frame", "must name a frame"),
            (0 < self.max_updates_per_second <= 100, "max_updates_per_second", "must be in (0, 100] Hz"),
            (self.diagnostics_period >= 0.1, "diagnostics_period", "must be >= 0.1 s"),
            (self.trainable in TRAINABLE, "trainable", f"must be one of {', '.join(TRAINABLE)}"),
            (self.reference_transport in DEPTH_TRANSPORTS, "reference_transport",
             f"must be one of {', '.join(DEPTH_TRANSPORTS)}"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ConfigError(f"parameter '{name}' {rule} (got {getattr(self, name)!r})")
        try:
            self.adaptation()
        except ValueError as error:
            raise ConfigError(str(error)) from None


def folder_problem(path: str) -> str | None:
    """Why ``path`` cannot be (or become) a folder this process writes into, or None if it can: an existing
    non-folder, a non-folder on the way to it, or no write permission on the nearest existing folder. Nothing is
    created."""
    if not path:
        return None
    target = Path(path).expanduser().absolute()
    if target.exists() and not target.is_dir():
        return "names an existing file, not a folder"
    existing = next(parent for parent in (target, *target.parents) if parent.exists())
    if not existing.is_dir():
        return f"lies under {existing}, which is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot be written: no write permission on {existing}"
    return None


@dataclass
class _PendingImage:
    msg: Image | CompressedImage
    stamp: float


class AdaptationNode(Node):
    """The adaptation_node ROS 2 node; see the module docstring. Call :meth:`stop` before destroying it.

    Raises:
        ConfigError: a parameter value it cannot run with.
        CheckpointError: the starting checkpoint cannot be loaded.
    """

    def __init__(self, **node_options):
        super().__init__("adaptation_node", **node_options)
        self.config = config = declare_and_load(self, AdaptationNodeConfig)
        torch.set_num_threads(config.threads)
        self.adapter = OnlineAdapter(config.checkpoint, config.output_dir, config.adaptation(),
                                     input_size=config.input_size or None, device=config.device)
        self._log = ThrottledLog(self.get_logger())
        self._lock = threading.Lock()  # the message buffers below
        self._training = threading.Lock()  # the adapter's weights: updates, checks, resets
        self._pending: deque[_PendingImage] = deque()
        self._cameras = CameraInfoCache(config.camera_info_tolerance)
        self._warned_once: set[str] = set()
        self._references: deque[tuple[np.ndarray, np.ndarray, float | None]] = deque(maxlen=REFERENCE_FRAMES)
        self._reference_msgs = StampedBuffer(PENDING_IMAGES)
        self.frames_received = 0
        self.publishes_handed_over = 0
        self.live_abs_rel: float | None = None
        self._update_times: deque[float] = deque(maxlen=20)

        guard = self._log.guard  # every callback: a failure answers or drops that one message, the node goes on
        image_type, image_topic = (CompressedImage, "image/compressed") if config.use_compressed else (Image, "image")
        self.create_subscription(image_type, image_topic, guard("image callback", self._on_image),
                                 qos_profile_sensor_data)
        self.create_subscription(CameraInfo, "camera_info", guard("camera_info callback", self._on_camera_info),
                                 qos_profile_sensor_data)
        self.poses = self._pose_source()
        if config.use_reference_depth:
            self.create_subscription(*depth_subscription(config.reference_transport, "reference_depth"),
                                     guard("reference_depth callback", self._on_reference), qos_profile_sensor_data)
        self.create_service(Trigger, "~/reset", guard("reset", self._on_reset, trigger_failed))
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(config.diagnostics_period, guard("diagnostics", self._publish_diagnostics))
        self._param_client = None
        if config.depth_node_name:
            from rclpy.parameter_client import AsyncParameterClient

            self._param_client = AsyncParameterClient(self, config.depth_node_name)
        self._stopping = threading.Event()
        self._trainer = threading.Thread(target=self._train, name="adaptation_training", daemon=True)
        self._trainer.start()
        self.get_logger().info(
            f"adapting {config.checkpoint} ({config.trainable}, at most {config.max_updates_per_second} updates/s, "
            f"{config.threads} thread(s)); publishing to {self.adapter.output_dir}/latest.pth"
            + (f" and {self.resolve_topic_name(config.depth_node_name)}" if config.depth_node_name else ""))

    def _pose_source(self) -> CameraPoses:
        """tf2 (``pose_source: tf``), else odometry x the camera extrinsic (/tf_static, else camera_to_base).

        Raises:
            ConfigError: ``pose_source: tf`` without tf2_ros.
        """
        if self.config.pose_source == "tf":
            tf = start_tf(self)
            if tf is None:
                raise ConfigError("parameter 'pose_source' tf needs tf2_ros, which comes with a ROS 2 distro (not "
                                  "with pip); use pose_source odom with the odom topic and camera_to_base")
            buffer, self._tf_listener = tf
            return TfPoses(buffer, self.config.fixed_frame)
        poses = OdometryPoses(pose_matrix(self.config.camera_to_base), self.config.odom_tolerance)
        self.create_subscription(Odometry, "odom", self._log.guard("odom callback", self._on_odom),
                                 QoSProfile(depth=100))
        self._subscribe_tf_static(poses)
        return poses

    def _subscribe_tf_static(self, poses: OdometryPoses) -> None:
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:  # pip installs: no tf2_msgs wheel; camera_to_base gives the extrinsic
            self.get_logger().info("tf2_msgs not available: the camera extrinsic comes from camera_to_base")
            return
        latched = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(TFMessage, "/tf_static", self._log.guard("tf_static callback", poses.add_static),
                                 latched)

    # --- inputs -----------------------------------------------------------------------------------------------

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            camera = PinholeCamera.from_camera_info(msg, use_rectified=self.config.use_rectified)
        except ValueError as error:
            self._reject("CameraInfo", str(error))
            return
        self._cameras.add(msg.header.frame_id, stamp_ns(msg.header), camera)

    def _on_reference(self, msg: Image) -> None:
        self._reference_msgs.add(stamp_ns(msg.header), msg)

    def _on_odom(self, msg: Odometry) -> None:
        try:
            jumped = self.poses.add(stamp_ns(msg.header), pose_msg_to_matrix(msg), msg.child_frame_id)
        except ValueError as error:
            self._reject("odom", str(error))
            return
        if jumped:
            self._log.warning("time jump", "odometry time went back (a looped bag or a restarted clock): history "
                                           "cleared")
            with self._lock:
                self._pending.clear()
        self._resolve_pending()

    def _on_image(self, msg) -> None:
        self.frames_received += 1
        with self._lock:
            self._pending.append(_PendingImage(msg, stamp_ns(msg.header) * 1e-9))
            while len(self._pending) > PENDING_IMAGES:
                dropped = self._pending.popleft()
                self._reject("image", f"no odometry after its stamp {dropped.stamp:.6f} s")
        self._resolve_pending()

    def _resolve_pending(self) -> None:
        """Offer every waiting image whose stamp the pose source now reaches; later ones wait for newer poses."""
        while True:
            with self._lock:
                if not self._pending or not (self._ready(self._pending[0]) or self._tf_gap()):
                    return
                image = self._pending.popleft()
            self._offer(image)

    def _ready(self, image: _PendingImage) -> bool:
        return self.poses.ready(image.msg.header.frame_id, stamp_ns(image.msg.header))

    def _tf_gap(self) -> bool:
        """tf2 knows a later image's pose but not the oldest's (a gap, or older than its cache): that one can go (it
        is rejected as without pose). Odometry is never behind an image it has passed."""
        return isinstance(self.poses, TfPoses) and self._ready(self._pending[-1])

    def _offer(self, image: _PendingImage) -> None:
        msg = image.msg
        try:
            decode = compressed_to_rgb if self.config.use_compressed else image_to_rgb
            rgb = decode(msg, max_pixels=self.config.max_image_pixels)
        except ValueError as error:
            self._reject("image", str(error))
            return
        try:
            match = self._cameras.match(msg.header.frame_id, stamp_ns(msg.header), *rgb.shape[:2])
        except NoCameraError as error:
            self.adapter.counts["rejected: no matching camera_info"] += 1
            self._log.warning("camera_info", f"dropping image: {error}")
            return
        if match.stamp_warning and msg.header.frame_id not in self._warned_once:
            self._warned_once.add(msg.header.frame_id)
            self.get_logger().warning(match.stamp_warning + "; warned once")
        camera = match.camera
        try:
            pose = self.poses.pose(msg.header.frame_id, stamp_ns(msg.header))
        except PoseLookupError as error:
            self.adapter.counts["rejected: no odometry" if isinstance(self.poses, OdometryPoses)
                                else "rejected: no pose"] += 1
            self._log.warning("no pose", f"dropping image: {error}")
            return
        outcome = self.adapter.offer(rgb, camera, pose, image.stamp)
        if outcome.startswith("rejected"):
            self._log.warning(outcome, f"image at {image.stamp:.3f} s {outcome}")
        self._keep_reference(rgb, stamp_ns(msg.header), camera)

    def _keep_reference(self, rgb: np.ndarray, stamp: int, camera: PinholeCamera) -> None:
        found = self._reference_msgs.nearest(stamp, self.config.camera_info_tolerance)
        if found is None:
            return
        self._reference_msgs.discard(found[0])
        msg = found[1]
        try:
            reference = reference_at(depth_msg_to_array(msg, max_pixels=self.config.max_image_pixels), rgb.shape[:2])
        except ValueError as error:
            self._reject("reference_depth", str(error))
            return
        with self._lock:
            self._references.append((rgb, reference, camera.fx))

    def _reject(self, what: str, problem: str) -> None:
        self.adapter.counts[f"rejected: bad {what}"] += 1
        self._log.problem(what, problem)

    # --- training ----------------------------------------------------------------------------------------------
    def _train(self) -> None:
        period = 1.0 / self.config.max_updates_per_second
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                with self._training:  # one update or reset at a time
                    if self.adapter.ready() and self.adapter.update() is not None:
                        self._update_times.append(time.monotonic())
                        if self.adapter.check() == "published":
                            self._hand_over()
            except Exception as error:  # a bug in one update must not silently end the adaptation
                self._log.error(f"training {type(error).__name__}", f"update failed: {type(error).__name__}: "
                                                                    f"{error}")
            self._stopping.wait(max(0.0, period - (time.monotonic() - started)))

    def _hand_over(self) -> None:
        """Tell depth_node to load the published weights; then score them on the kept reference frames."""
        path = self.adapter.output_dir / "latest.pth"
        if self._param_client is not None:
            future = self._param_client.set_parameters([Parameter("checkpoint", value=str(path.resolve()))])
            future.add_done_callback(self._handed_over)
        score, replaced = self.adapter.published_score, self.adapter.replaced_score
        self.get_logger().info(f"published {path}" + (
            f" (held-out loss {score.loss:.4f} < {replaced.loss:.4f} of the replaced weights, scale ratio "
            f"{score.scale:.3f}, was {replaced.scale:.3f})" if score is not None and replaced is not None else ""))
        with self._lock:
            references = list(self._references)
        if references:
            estimator = DepthEstimator(self.adapter.scoring_model(self.adapter.published),
                                       self.adapter.metadata, device=str(self.adapter.device))
            scores = []
            for rgb, reference, fx in references:
                try:
                    scores.append(evaluate_depth(estimator.infer(rgb, fx=fx), reference, min_depth=REFERENCE_MIN_DEPTH,
                                                 max_depth=self.adapter.metadata.max_depth)["abs_rel"])
                except ValueError:  # no valid reference pixel
                    continue
            self.live_abs_rel = float(np.mean(scores)) if scores else None

    def _handed_over(self, future) -> None:
        try:
            result = future.result().results[0]
        except Exception as error:  # depth_node gone or not answering
            self._log.warning("hand-over", f"depth_node did not take the new weights: {error}")
            return
        if result.successful:
            self.publishes_handed_over += 1
        else:
            self._log.warning("hand-over", f"depth_node refused the new weights: {result.reason}")

    def _on_reset(self, _request, response):
        with self._training:
            path = self.adapter.reset()
            self._hand_over()
        response.success, response.message = True, f"reset to the starting checkpoint, published as {path}"
        return response

    def stop(self) -> None:
        """Stop the training thread (waits for the update in progress, at most 30 s)."""
        self._stopping.set()
        self._trainer.join(timeout=30.0)

    # --- diagnostics -------------------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        if self._diagnostics_pub.get_subscription_count() == 0:
            return
        adapter = self.adapter
        counts = dict(adapter.counts)
        times = list(self._update_times)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        values = {
            "frames received": self.frames_received,
            "samples": adapter.samples_seen,
            "replay buffer": len(adapter.replay),
            "held-out samples": len(adapter.holdout),
            "updates": adapter.updates,
            "updates per second": rate,
            "training loss": adapter.last_loss,
            "published": counts.get("published", 0),
            "handed over": self.publishes_handed_over,
            "kept (not better)": counts.get("kept", 0),
            "rollbacks": counts.get("rolled back", 0),
            "resets": counts.get("resets", 0),
        }
        if adapter.published_score is not None:
            values["held-out loss"] = adapter.published_score.loss
            values["scale ratio"] = adapter.published_score.scale
        if adapter.start_score is not None:
            values["held-out loss at start"] = adapter.start_score.loss
        if self.live_abs_rel is not None:
            values["AbsRel (published)"] = self.live_abs_rel
        values.update({outcome: count for outcome, count in counts.items() if outcome.startswith("rejected")
                       or outcome in ("keyframe", "not moved", "sample", "non-finite loss")})
        rejected = sum(c for o, c in counts.items() if o.startswith("rejected"))
        level = DiagnosticStatus.WARN if self.frames_received == 0 else DiagnosticStatus.OK
        message = "no images received" if self.frames_received == 0 else (
            f"{adapter.samples_seen} samples, {adapter.updates} updates, {counts.get('published', 0)} published, "
            f"{rejected} frames rejected")
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [DiagnosticStatus(
            level=level, name=f"{self.get_name()}: online adaptation", message=message,
            hardware_id=self.get_fully_qualified_name(),
            values=[KeyValue(key=k, value=str(v) if isinstance(v, (int, str)) else f"{v:.4g}")
                    for k, v in values.items() if not (isinstance(v, float) and math.isnan(v))])]
        self._diagnostics_pub.publish(array)


def main(args=None) -> int:
    """Entry point of ``adaptation_node``: exit status 0 on shutdown, 1 with one log line when start-up fails."""
    return run_node(AdaptationNode, "adaptation_node", args)


if __name__ == "__main__":
    sys.exit(main())
