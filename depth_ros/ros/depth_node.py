"""depth_node: camera images in; metric depth, PointCloud2 and OccupancyGrid out (ROS 2, rclpy).

Topics (relative names, so a namespace or remapping places them):

- in: ``image`` (sensor_msgs/Image) or, with ``use_compressed``, ``image/compressed`` (sensor_msgs/CompressedImage);
  ``camera_info`` (sensor_msgs/CameraInfo); with ``use_reference_depth``, ``reference_depth`` (32FC1 / 16UC1).
- out, each only while something subscribes: ``depth`` (32FC1 m, REP 118, the image's header), ``depth/camera_info``,
  ``points`` (optical frame), ``occupancy`` (``grid_frame``), ``/diagnostics`` and, for a checkpoint with a sigma
  head, ``depth/uncertainty`` (32FC1 m, sigma of each depth pixel, depth's header). With ``max_relative_sigma``,
  points and occupancy leave out the pixels whose sigma / depth exceeds it (docs/uncertainty.md).

Threads: the executor runs the callbacks, which only check and store messages; one worker thread runs the model on
the newest image (a queue of depth 1: an image still waiting when a newer one arrives is dropped and counted), so
latency stays bounded when images come faster than the network runs.

Model swap: ``checkpoint`` is the one parameter that may change at run time (``ros2 param set <node> checkpoint
<file or id>``, or a SetParameters request as adaptation_node sends). The new model loads in a background thread
while the old one keeps publishing, and takes over between two frames; a path that does not exist, is not a regular
file or is empty is refused at once (the set fails), one that cannot be loaded (corrupt, relative head, ...) is
rejected with an error log, the parameter returns to the running checkpoint (on the executor thread, after the set
that named it) and the old model goes on; a new set waits until that is done. /diagnostics reports the checkpoint in
use, swaps and rejections; live accuracy restarts with each model.

Every callback (subscriptions, timer, set-parameters) catches its errors: logged (throttled), that message dropped
or that request refused, the node goes on (docs/robustness.md).

Parameters: :mod:`depth_ros.ros.params` (documented in config/depth.yaml). The computation itself is
:class:`depth_ros.pipeline.DepthPipeline`; this module only adapts messages and threads to it.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, replace

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import OccupancyGrid
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from depth_ros.checkpoints import OFFICIAL_MODELS, CheckpointError, is_transformers_source, resolve
from depth_ros.frame import CACHE_SIZE, CameraInfoCache, NoCameraError
from depth_ros.geometry.camera import PinholeCamera
from depth_ros.geometry.transform import PoseLookupError, pose_matrix
from depth_ros.metrics import evaluate_depth, reference_at
from depth_ros.pipeline import DepthPipeline
from depth_ros.ros.conversions import (
    compressed_to_rgb,
    depth_msg_to_array,
    depth_subscription,
    image_to_rgb,
    stamp_ns,
)
from depth_ros.ros.diagnostics import NodeStats
from depth_ros.ros.outputs import OUTPUT_TOPICS, UNCERTAINTY_TOPIC, output_messages
from depth_ros.ros.params import declare_and_load
from depth_ros.ros.pose_sources import CameraPoses, StaticPose, TfPoses, start_tf
from depth_ros.ros.runner import run_node
from depth_ros.ros.throttle import ThrottledLog
from depth_ros.stamps import StampedBuffer

TF_TIMEOUT = 0.1  # s the worker waits for a transform tf2 does not have yet
# s. Consecutive image stamps further apart than this (either way) are a clock jump (a replayed or looped bag, a
# restarted or corrected clock, one bad stamp), far beyond any frame interval: the stamp order restarts, warned.
CLOCK_JUMP = 30.0
OUTPUT_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)  # RViz and Nav2 both match it


@dataclass
class _QueuedImage:
    msg: Image | CompressedImage
    received: float  # time.monotonic() at receipt


class DepthNode(Node):
    """The depth_node ROS 2 node; see the module docstring. Call :meth:`stop` before destroying it.

    Raises:
        ConfigError: a parameter value it cannot run with.
        CheckpointError: the checkpoint cannot be loaded.
        ValueError: a bad device or precision, or a relative (non-metric) checkpoint.
    """

    def __init__(self, **node_options):
        super().__init__("depth_node", **node_options)
        self.config = config = declare_and_load(self)
        self.pipeline = DepthPipeline.from_config(config)
        self.stats = NodeStats()
        self.stats.model(config.checkpoint, swapped=False)
        self._log = ThrottledLog(self.get_logger())
        guard = self._log.guard  # every callback: a failure drops that message or refuses that request, never the node
        self._loading: threading.Thread | None = None
        self._reverting = False
        self._revert_to: str | None = None
        # a rejected checkpoint is reverted on the executor thread, after the set that named it has completed
        self._revert = self.create_guard_condition(guard("checkpoint revert", self._apply_revert))
        self.add_on_set_parameters_callback(guard(
            "checkpoint change", self._on_set_parameters,
            lambda reason, _parameters: SetParametersResult(successful=False, reason=reason)))
        self._warned_once: set[str] = set()
        self._cameras = CameraInfoCache(config.camera_info_tolerance)
        self._references = StampedBuffer(CACHE_SIZE)  # by stamp only: registered depth may carry another frame_id
        self._last_stamp: int | None = None
        self.poses = self._pose_source()

        input_qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE) if config.reliable_input \
            else qos_profile_sensor_data
        if config.use_compressed:
            self.create_subscription(CompressedImage, "image/compressed", guard("image callback", self._on_image),
                                     input_qos)
        else:
            self.create_subscription(Image, "image", guard("image callback", self._on_image), input_qos)
        self.create_subscription(CameraInfo, "camera_info", guard("camera_info callback", self._on_camera_info),
                                 input_qos)
        if config.use_reference_depth:
            self.create_subscription(*depth_subscription(config.reference_transport, "reference_depth"),
                                     guard("reference_depth callback", self._on_reference), input_qos)
        output_types = {"depth": Image, "depth/camera_info": CameraInfo, "points": PointCloud2,
                        "occupancy": OccupancyGrid, UNCERTAINTY_TOPIC: Image}
        self._outputs = {topic: self.create_publisher(output_types[topic], topic, OUTPUT_QOS)
                         for topic in (*OUTPUT_TOPICS, UNCERTAINTY_TOPIC)}
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(config.diagnostics_period, guard("diagnostics", self._publish_diagnostics))

        self._pending: _QueuedImage | None = None
        self._wake = threading.Condition()
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name="depth_inference", daemon=True)
        self._worker.start()
        self._check_gating(self.pipeline, config.checkpoint)
        metadata = self.pipeline.estimator.metadata
        self.get_logger().info(
            f"ready: {metadata.encoder} {metadata.head} model (max {metadata.max_depth} m) on "
            f"{self.pipeline.estimator.device}, input {self.pipeline.estimator.input_size} px; reading "
            f"{self.resolve_topic_name('image/compressed' if config.use_compressed else 'image')}")

    # --- logging ----------------------------------------------------------------------------------------------
    def _reject(self, what: str, problem: str, warning: bool = False) -> None:
        """Count a dropped message and log ``dropping <what>: <problem>``, throttled per kind of problem."""
        self.stats.rejected()
        self._log.problem(what, problem, warning)

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned_once:
            self._warned_once.add(key)
            self.get_logger().warning(text)

    def _check_gating(self, pipeline: DepthPipeline, checkpoint: str) -> None:
        """Warn once per checkpoint when max_relative_sigma is set but the model gives no sigma (no gating)."""
        if self.config.max_relative_sigma > 0 and not pipeline.gating:
            self._warn_once(f"no sigma gating {checkpoint}",
                            f"max_relative_sigma is {self.config.max_relative_sigma} but {checkpoint} has no sigma "
                            "head (or its backend does not run it): points and occupancy are not gated "
                            "(docs/uncertainty.md: add one by training it)")

    # --- callbacks (executor thread: check, store, never wait for the model) ----------------------------------
    def _on_image(self, msg) -> None:
        self.stats.received()
        stamp = stamp_ns(msg.header)
        previous, self._last_stamp = self._last_stamp, stamp
        if previous is not None and abs(stamp - previous) > CLOCK_JUMP * 1e9:
            self._log.warning("clock jump", f"image stamp {stamp / 1e9:.9f} s is {(stamp - previous) / 1e9:+.3f} s "
                                            f"from the previous image's: a clock jump (more than {CLOCK_JUMP} s), "
                                            "the stamp order restarts here")
        elif previous is not None and stamp < previous:
            self._reject("image", f"its stamp {stamp / 1e9:.9f} s is earlier than the previous image's "
                                  f"{previous / 1e9:.9f} s (stamps going backwards)")
            return
        if stamp == 0:
            self._log.warning("zero stamp", "image stamp is 0 (unset): outputs carry it, tf lookups at it "
                                                  "fail and no latency from stamp is reported for it")
        if not msg.header.frame_id:
            self._log.warning("empty frame_id", "image has an empty frame_id: depth and points carry it, so "
                                                      "nothing can place them (REP 105); set the driver's frame_id")
        with self._wake:
            if self._pending is not None:
                self.stats.dropped()
            self._pending = _QueuedImage(msg, time.monotonic())
            self._wake.notify()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            camera = PinholeCamera.from_camera_info(msg, use_rectified=self.config.use_rectified)
        except ValueError as error:
            self._reject("CameraInfo", str(error))
            return
        self._cameras.add(msg.header.frame_id, stamp_ns(msg.header), camera)

    def _on_reference(self, msg: Image) -> None:
        self._references.add(stamp_ns(msg.header), msg)

    # --- worker thread ------------------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._wake:
                while self._pending is None and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                frame, self._pending = self._pending, None
            try:
                self._process(frame)
            except Exception as error:  # a bug in one frame must not silently end the node's output
                if self._stopping:
                    return
                self._log.error(f"unexpected {type(error).__name__}",
                                      f"frame failed with {type(error).__name__}: {error}")

    def stop(self) -> None:
        """Stop the worker thread (waits for the frame in progress, at most 10 s)."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._worker.join(timeout=10.0)

    # --- model swap -------------------------------------------------------------------------------------------
    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """Accept a new ``checkpoint`` that names a loadable file or model id; it loads in the background while the
        old model keeps running, and replaces it between two frames (:meth:`_load_checkpoint`)."""
        for parameter in parameters:
            if parameter.name != "checkpoint" or self._reverting:
                continue
            value = parameter.value
            if not isinstance(value, str) or not value:
                return SetParametersResult(successful=False, reason="checkpoint must name a checkpoint file or id")
            if (self._loading is not None and self._loading.is_alive()) or self._revert_to is not None:
                return SetParametersResult(successful=False, reason="a checkpoint is still loading; retry later")
            try:
                if value not in OFFICIAL_MODELS and not is_transformers_source(value):
                    resolve(value)  # a file must exist now; a model id is fetched by the loader
            except CheckpointError as error:
                self.stats.checkpoint_rejected()
                self.get_logger().error(f"checkpoint rejected, keeping {self.stats.checkpoint}: {error}")
                return SetParametersResult(successful=False, reason=str(error))
            self._loading = threading.Thread(target=self._load_checkpoint, args=(value, self.stats.checkpoint),
                                             name="checkpoint_loader", daemon=True)
            self._loading.start()
        return SetParametersResult(successful=True)

    def _load_checkpoint(self, checkpoint: str, previous: str) -> None:
        try:
            config = replace(self.config, checkpoint=checkpoint)
            pipeline = DepthPipeline.from_config(config)
        except (ValueError, OSError) as error:  # CheckpointError, a relative model, an unreadable file
            self.stats.checkpoint_rejected()
            self.get_logger().error(f"checkpoint {checkpoint} rejected, keeping {previous}: {error}")
            self._revert_to = previous
            self._revert.trigger()  # not set_parameters here: it could land before the set naming this checkpoint
            return
        self.pipeline, self.config = pipeline, config  # the worker picks it up at its next frame
        self._check_gating(pipeline, checkpoint)
        self.stats.model(checkpoint, swapped=True)
        self.get_logger().info(f"model swapped: now running {checkpoint}")

    def _apply_revert(self) -> None:
        """Executor thread: the ``checkpoint`` parameter back to the running model after a rejected load. The set
        that named the rejected file was stored before this runs (it ran on this thread), so nothing overwrites
        the revert."""
        previous, self._revert_to = self._revert_to, None
        if previous is None:
            return
        self._reverting = True
        try:
            self.set_parameters([Parameter("checkpoint", value=previous)])
        finally:
            self._reverting = False

    def _process(self, frame: _QueuedImage) -> None:
        pipeline = self.pipeline  # one model for the whole frame, even if a swap lands meanwhile
        wanted = {topic for topic, publisher in self._outputs.items() if publisher.get_subscription_count() > 0}
        if not wanted and not self.config.use_reference_depth:
            self.stats.idle()
            return
        want_grid = "occupancy" in wanted
        header = frame.msg.header
        start = time.perf_counter()
        try:
            decode = compressed_to_rgb if self.config.use_compressed else image_to_rgb
            rgb = decode(frame.msg, max_pixels=self.config.max_image_pixels)
        except ValueError as error:
            self._reject("image", str(error))
            return
        decoded = time.perf_counter() - start
        camera = self._camera_for(header, *rgb.shape[:2])
        pose = self._camera_pose(header) if camera is not None and want_grid else None
        want_sigma = UNCERTAINTY_TOPIC in wanted
        if want_sigma and not pipeline.estimator.has_uncertainty:
            self._warn_once(f"no sigma {self.stats.checkpoint}",
                            f"{self.resolve_topic_name(UNCERTAINTY_TOPIC)} has a subscriber but "
                            f"{self.stats.checkpoint} has no sigma head (or its backend does not run it): nothing "
                            "is published on it")
        try:
            out = pipeline.run(rgb, camera, pose, want_cloud="points" in wanted, want_grid=want_grid,
                               want_uncertainty=want_sigma)
        except ValueError as error:  # e.g. an image smaller than one 14 x 14 px network patch
            self._reject("image", str(error))
            return
        start = time.perf_counter()
        messages = output_messages(out, header, self.config.grid_frame, pipeline.grid_options.spec, wanted)
        for topic, msg in messages.items():
            self._outputs[topic].publish(msg)
        from_stamp = (self.get_clock().now().nanoseconds - stamp_ns(header)) / 1e9
        self.stats.processed(
            stages={"decode": decoded, **out.timings, "publish": time.perf_counter() - start},
            end_to_end=time.monotonic() - frame.received,
            # an unset stamp (0) or one ahead of this clock (another clock) has no meaningful latency
            from_stamp=from_stamp if stamp_ns(header) > 0 and from_stamp >= 0 else None,
        )
        if self.config.use_reference_depth:
            self._evaluate(header, out.prediction)

    def _camera_for(self, header, height: int, width: int) -> PinholeCamera | None:
        """The camera of this image by :class:`~depth_ros.frame.CameraInfoCache`'s rule; None (warned) if none fits."""
        frame_id = header.frame_id
        try:
            match = self._cameras.match(frame_id, stamp_ns(header), height, width)
        except NoCameraError as error:
            self._log.warning(f"no camera {frame_id}", f"{error} on {self.resolve_topic_name('camera_info')}: "
                                                       "publishing depth only; points and occupancy wait for it")
            return None
        if match.size_warning:
            self._log.warning(f"camera size {frame_id}", match.size_warning)
        if match.stamp_warning:
            self._warn_once(f"stamps {frame_id}", match.stamp_warning + "; warned once")
        return match.camera

    def _pose_source(self) -> CameraPoses:
        """tf2's grid_frame <- camera (``use_tf`` and tf2_ros available), else the static camera_to_base."""
        tf = start_tf(self) if self.config.use_tf else None
        if tf is None:
            if self.config.use_tf:
                self.get_logger().info("tf2_ros is not available: the camera pose is the camera_to_base parameter")
            return StaticPose(pose_matrix(self.config.camera_to_base), self.config.grid_frame)
        buffer, self._tf_listener = tf
        return TfPoses(buffer, self.config.grid_frame, timeout=TF_TIMEOUT)

    def _camera_pose(self, header) -> np.ndarray | None:
        """``T_grid_camera`` at the image's stamp; None (warned) if the pose source has none."""
        try:
            return self.poses.pose(header.frame_id, stamp_ns(header))
        except PoseLookupError as error:
            self._log.warning("tf", f"{error}; occupancy skipped")
            return None

    def _evaluate(self, header, prediction: np.ndarray) -> None:
        """Add this frame's AbsRel / RMSE / delta1 against the reference depth of (nearly) the same stamp."""
        stamp = stamp_ns(header)
        found = self._references.nearest(stamp, self.config.camera_info_tolerance)
        if found is None:
            return
        try:
            reference = reference_at(depth_msg_to_array(found[1], max_pixels=self.config.max_image_pixels),
                                     prediction.shape)
        except ValueError as error:
            self._references.discard(found[0])
            self._reject("reference_depth", str(error), warning=True)
            return
        try:
            metrics = evaluate_depth(prediction, reference, min_depth=self.config.min_depth,
                                     max_depth=self.config.max_depth)
        except ValueError:  # no valid reference pixel in this frame
            return
        self.stats.accuracy(metrics)

    def _publish_diagnostics(self) -> None:
        if self._diagnostics_pub.get_subscription_count() == 0:
            return
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [self.stats.status(f"{self.get_name()}: depth pipeline", self.get_fully_qualified_name())]
        self._diagnostics_pub.publish(array)


def main(args=None) -> int:
    """Entry point of ``depth_node``: exit status 0 on shutdown, 1 with one log line when start-up fails."""
    return run_node(DepthNode, "depth_node", args)


if __name__ == "__main__":
    sys.exit(main())
