"""Harnesses shared by the tests, the demo and the benchmarks: one home for each, so they cannot drift apart.

- :func:`random_checkpoint`: a checkpoint of a randomly initialised (seeded) network, to run the real code paths
  without downloading a model.
- :class:`NodeProcess`: the ``depth_node`` executable in its own process, its output in a log file, always stopped.
- :class:`NodeHarness`: a :class:`NodeProcess` plus an in-process rclpy peer that publishes the node's inputs and
  records its outputs by stamp; every wait is bounded and ends early, with the node's last error line, when the node
  exits.

Network safety is the caller's: set ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and a ``ROS_DOMAIN_ID`` before
creating a harness (test/conftest.py and the demo do); the node process inherits the environment.
"""

from __future__ import annotations

import copy
import io
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from depth_ros.ros.conversions import DEPTH_TRANSPORTS, depth_subscription, stamp_ns

OUTPUTS = ("depth", "depth/camera_info", "points", "occupancy")  # the node's outputs, relative names
DIAGNOSTICS = "/diagnostics"
DISCOVERY_SETTLE = 0.5  # s after a publisher has matched, for the subscriber's side of discovery to see it


def random_checkpoint(path: str | os.PathLike, encoder: str = "vits", input_size: int = 70, *, head: str = "metric",
                      max_depth: float = 20.0, train_focal_px: float | None = None, seed: int = 0,
                      architecture: str = "depth_anything_v2", uncertainty: bool = False) -> Path:
    """Save a model of the registry (:func:`depth_ros.models.create_model`) with seeded random weights as a
    depth_ros checkpoint.

    The global torch random state is left as it was. The same arguments give the same weights in every run.

    Args:
        path: file to write (``.pth`` or ``.safetensors``; see :func:`~depth_ros.checkpoints.save_checkpoint`).
        encoder: the architecture's variant: vits, vitb, vitl or vitg (Depth Anything V2), tiny or slim (PackNet).
        input_size: training input size stored in the metadata (px, a multiple of the architecture's stride).
        head: ``metric`` or ``relative``.
        max_depth: metric range in m.
        train_focal_px: training focal length at network input in px (None: no focal correction possible).
        seed: torch seed of the initialisation.
        architecture: ``depth_anything_v2`` or ``packnet``.
        uncertainty: with a sigma head (metric only).

    Returns:
        The path written.
    """
    import torch

    from depth_ros.checkpoints import CheckpointMetadata, save_checkpoint
    from depth_ros.models import create_model

    metadata = CheckpointMetadata(encoder, head, max_depth, input_size, train_focal_px, architecture=architecture,
                                  uncertainty=uncertainty)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = create_model(metadata)
    return save_checkpoint(path, model, metadata)


def large_png(width: int = 10_000, height: int = 10_000) -> bytes:
    """A real, valid PNG file of ``width`` x ``height`` black pixels that is small on disk (1 bit per pixel, deflated:
    about 12 kB for 10000 x 10000) but decodes to ``3 * width * height`` bytes of RGB: a decompression-bomb input."""
    from PIL import Image as PillowImage

    buffer = io.BytesIO()
    PillowImage.new("1", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def ros_value(value) -> str:
    """A Python value as the text of a ``-p name:=value`` override (booleans lower case, sequences as YAML lists, the
    empty string quoted)."""
    if isinstance(value, bool):
        return str(value).lower()
    if value == "":
        return "''"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(repr(float(v)) for v in value) + "]"
    return str(value)


class NodeProcess:
    """A depth_ros node (``depth_node`` by default) in its own process and session (a Ctrl-C in the terminal reaches
    only the caller).

    Args:
        params: parameter name -> value, passed as ``-p`` overrides (see :func:`ros_value`).
        log_path: file receiving the node's stdout and stderr.
        namespace: the node's namespace (its topics are relative).
        params_file: a ``--params-file`` given before the overrides.
        executable: the console script (``depth_node``, ``adaptation_node``), module ``depth_ros.ros.<name>``.
    """

    def __init__(self, params: Mapping[str, object], log_path: Path, namespace: str,
                 params_file: Path | None = None, executable: str = "depth_node"):
        self.executable = executable
        script = Path(sys.executable).with_name(executable)
        command = [str(script)] if script.is_file() else [sys.executable, "-m", f"depth_ros.ros.{executable}"]
        command += ["--ros-args", "-r", f"__ns:={namespace}"]
        if params_file is not None:
            command += ["--params-file", str(params_file)]
        for name, value in params.items():
            command += ["-p", f"{name}:={ros_value(value)}"]
        self.log_path = Path(log_path)
        env = dict(os.environ, RCUTILS_COLORIZED_OUTPUT="0", RCUTILS_LOGGING_BUFFERED_STREAM="0")
        with open(self.log_path, "wb") as log_file:
            self.process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)

    def log(self, start: int = 0) -> str:
        """The node's output from byte ``start`` on."""
        return self.log_path.read_bytes()[start:].decode(errors="replace")

    def log_size(self) -> int:
        """Bytes of output so far (a ``start`` for :meth:`log`)."""
        return self.log_path.stat().st_size

    def check_running(self) -> None:
        """Raise ChildProcessError with the node's last FATAL / ERROR line (else its last line) when it has exited."""
        code = self.process.poll()
        if code is None:
            return
        lines = [line.strip() for line in self.log().splitlines() if line.strip()]
        errors = [line for line in lines if "[FATAL]" in line or "[ERROR]" in line] or lines or ["(no output)"]
        raise ChildProcessError(f"{self.executable} exited with code {code}: {errors[-1]} (log: {self.log_path})")

    def stop(self, timeout: float = 10.0) -> int:
        """Ctrl-C (SIGINT) the node, wait up to ``timeout`` s, then kill it; always reaps it. Returns its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


class RosPeer:
    """An rclpy node in a context of its own, spun by a background executor: the in-process side of every node test,
    the demo and the benchmarks. Use as a context manager, or call :meth:`close`.

    Args:
        name: node name.
        namespace: node namespace (relative topic names resolve in it).
    """

    def __init__(self, name: str, namespace: str = ""):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        try:
            self.node = rclpy.create_node(name, namespace=namespace, context=self.context)
            self.executor = SingleThreadedExecutor(context=self.context)
            self.executor.add_node(self.node)
            self._spinner = threading.Thread(target=self.executor.spin, name=f"{name}_spin", daemon=True)
            self._spinner.start()
        except BaseException:
            self.context.try_shutdown()
            raise

    def close(self) -> None:
        """Stop spinning, destroy the node and shut the context down (idempotent)."""
        if self.context is None:
            return
        self.executor.shutdown(timeout_sec=2.0)
        self._spinner.join(timeout=2.0)
        self.node.destroy_node()
        self.context.try_shutdown()
        self.context = None

    def __enter__(self) -> RosPeer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NodeHarness:
    """A :class:`NodeProcess` and an rclpy peer in this process that feeds it and records its outputs.

    The peer publishes ``image`` (or ``image/compressed``), ``camera_info`` and ``reference_depth`` (Image, or
    CompressedImage on ``reference_depth/compressedDepth``) and subscribes
    every output plus ``/diagnostics`` (reliable, as RViz). The constructor returns once both sides have matched
    every topic. Use as a context manager, or call :meth:`close`: the node process is stopped in every case.

    Attributes:
        received: output topic -> {stamp ns: message}; with ``keep``, only the newest ``keep`` stamps per topic.
        arrived: output topic -> {stamp ns: time.monotonic() at receipt} (never trimmed).
        sent: stamp ns -> time.monotonic() when the image with that stamp was published.
        diagnostics: (time.monotonic() at receipt, {key: value, "_message": status message}) per /diagnostics.

    Args:
        params, log_path, namespace, params_file: as :class:`NodeProcess`.
        compressed: publish sensor_msgs/CompressedImage on ``image/compressed`` (the node needs use_compressed).
        reliable_input: reliable input publishers (the node needs reliable_input); else the sensor-data profile.
        timeout: default bound of every wait, in s.
        keep: messages kept per output topic (None: all), to bound memory in long runs.

    Raises:
        ChildProcessError: the node exited (its last error line); TimeoutError: it did not connect in ``timeout``.
    """

    def __init__(self, params: Mapping[str, object], log_path: Path, namespace: str, *,
                 params_file: Path | None = None, compressed: bool = False, reliable_input: bool = False,
                 timeout: float = 90.0, keep: int | None = None):
        self.timeout, self.keep = timeout, keep
        self.received: dict[str, dict[int, object]] = {topic: {} for topic in OUTPUTS}
        self.arrived: dict[str, dict[int, float]] = {topic: {} for topic in OUTPUTS}
        self.sent: dict[int, float] = {}
        self.diagnostics: list[tuple[float, dict[str, str]]] = []
        self._changed = threading.Condition()
        self.node_process = NodeProcess(params, log_path, namespace, params_file)
        self.peer: RosPeer | None = None
        try:
            self._start_peer(namespace, compressed, reliable_input)
            self.wait_until(self._connected, "depth_node to start and match every topic")
            time.sleep(DISCOVERY_SETTLE)  # the node's side of discovery: it publishes only to subscribers it has seen
        except BaseException:
            self.close()
            raise

    def _start_peer(self, namespace: str, compressed: bool, reliable_input: bool) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import OccupancyGrid
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

        self.peer = RosPeer("depth_node_peer", namespace)
        self.node = self.peer.node
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        types = {"depth": Image, "depth/camera_info": CameraInfo, "points": PointCloud2, "occupancy": OccupancyGrid,
                 DIAGNOSTICS: DiagnosticArray}
        self._subscriptions = [
            self.node.create_subscription(kind, topic, lambda msg, topic=topic: self._record(topic, msg), reliable)
            for topic, kind in types.items()]
        self.image_type = CompressedImage if compressed else Image
        self.image_topic = "image/compressed" if compressed else "image"
        input_qos = reliable if reliable_input else qos_profile_sensor_data
        self.image_pub = self.node.create_publisher(self.image_type, self.image_topic, input_qos)
        self.info_pub = self.node.create_publisher(CameraInfo, "camera_info", input_qos)
        self.reference_pubs = {transport: self.node.create_publisher(*depth_subscription(transport, "reference_depth"),
                                                                     input_qos) for transport in DEPTH_TRANSPORTS}

    def _connected(self) -> bool:
        return (self.image_pub.get_subscription_count() > 0 and self.info_pub.get_subscription_count() > 0
                and all(s.get_publisher_count() > 0 for s in self._subscriptions))

    def _record(self, topic: str, msg) -> None:
        now = time.monotonic()
        with self._changed:
            if topic == DIAGNOSTICS:
                values = {kv.key: kv.value for status in msg.status for kv in status.values}
                values["_message"] = msg.status[0].message if msg.status else ""
                self.diagnostics.append((now, values))
            else:
                stamp = stamp_ns(msg.header)
                self.received[topic][stamp] = msg
                self.arrived[topic][stamp] = now
                if self.keep is not None and len(self.received[topic]) > self.keep:
                    del self.received[topic][min(self.received[topic])]
            self._changed.notify_all()

    # --- node side -------------------------------------------------------------------------------------------------
    def log(self, start: int = 0) -> str:
        """The node's output from byte ``start`` on."""
        return self.node_process.log(start)

    def log_size(self) -> int:
        """Bytes of node output so far."""
        return self.node_process.log_size()

    def check_running(self) -> None:
        """ChildProcessError (the node's last error line) when the node has exited."""
        self.node_process.check_running()

    # --- waiting ---------------------------------------------------------------------------------------------------
    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        """Wait until ``condition()`` (evaluated under the harness lock) is true.

        Raises:
            ChildProcessError: the node exited meanwhile. TimeoutError: not true within ``timeout`` s (default: the
                harness's); the message names ``what`` and the node's log.
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                self.check_running()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no {what} within {timeout:.0f} s (node log: {self.node_process.log_path})")
                self._changed.wait(timeout=0.1)

    def outputs(self, stamp: int, topics: tuple[str, ...] = OUTPUTS, timeout: float | None = None) -> dict:
        """Output topic -> the message with this stamp, for each of ``topics``, waiting for them."""
        self.wait_until(lambda: all(stamp in self.received[t] for t in topics),
                        f"{', '.join(topics)} for stamp {stamp}", timeout)
        with self._changed:
            return {topic: self.received[topic][stamp] for topic in topics}

    def wait_for_log(self, text: str, start: int = 0, timeout: float | None = None) -> None:
        """Wait until the node's output after byte ``start`` contains ``text``."""
        self.wait_until(lambda: text in self.log(start), f"log line containing {text!r}", timeout)

    def latest_diagnostics(self, condition: Callable[[dict], bool], what: str, after: float | None = None,
                           timeout: float | None = None) -> dict:
        """Values of the newest /diagnostics status once it satisfies ``condition`` and arrived after ``after``."""
        after = -math.inf if after is None else after
        self.wait_until(lambda: bool(self.diagnostics) and self.diagnostics[-1][0] > after
                        and condition(self.diagnostics[-1][1]), what, timeout)
        return self.diagnostics[-1][1]

    def diagnostic_values(self) -> dict[str, str]:
        """Every key's value in the newest status that has it (latencies exist only in periods with frames)."""
        with self._changed:
            merged = {}
            for _, values in self.diagnostics:
                merged.update(values)
        merged.pop("_message", None)
        return merged

    # --- publishing ------------------------------------------------------------------------------------------------
    def now(self):
        """The peer's ROS time as a builtin_interfaces/Time."""
        return self.node.get_clock().now().to_msg()

    def send(self, image=None, info=None, reference=None, stamp=None, frame_id: str | None = None,
             settle: float = 0.1) -> int:
        """Publish copies of the messages with one stamp (default: now) and ``frame_id``; returns the stamp in ns.

        CameraInfo and reference depth go first and the image ``settle`` s later, so the node has them when it
        takes the image (messages on different topics have no guaranteed order). The messages given are not
        changed; the image's publication time goes into :attr:`sent`.
        """
        stamp = self.now() if stamp is None else stamp
        stamp_value = stamp.sec * 1_000_000_000 + stamp.nanosec
        reference_pub = self.reference_pubs["compressedDepth" if hasattr(reference, "format") else "raw"]
        for publisher, msg in ((self.info_pub, info), (reference_pub, reference), (self.image_pub, image)):
            if msg is None:
                continue
            msg = copy.deepcopy(msg)
            msg.header.stamp = stamp
            if frame_id is not None:
                msg.header.frame_id = frame_id
            if publisher is self.image_pub:
                if info is not None or reference is not None:
                    time.sleep(settle)
                self.mark_sent(stamp_value)
            publisher.publish(msg)
        return stamp_value

    def mark_sent(self, stamp: int) -> None:
        """Record now (time.monotonic()) in :attr:`sent` as the publication time of the image stamped ``stamp`` ns.

        :meth:`send` calls it; so does a caller publishing images with a publisher of its own on :attr:`node` (the
        demo's :class:`~depth_ros.tools.play_bag.BagPlayer`), just before it publishes.
        """
        with self._changed:
            self.sent[stamp] = time.monotonic()

    def unsubscribe(self, suffixes: tuple[str, ...]) -> None:
        """Destroy the output subscriptions whose topic ends with one of ``suffixes``."""
        for subscription in [s for s in self._subscriptions if s.topic_name.endswith(suffixes)]:
            self._subscriptions.remove(subscription)
            self.node.destroy_subscription(subscription)

    def close(self) -> int:
        """Stop the peer and the node process (SIGINT, then kill); returns the node's exit code."""
        if self.peer is not None:
            self.peer.close()
        return self.node_process.stop()

    def __enter__(self) -> NodeHarness:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
