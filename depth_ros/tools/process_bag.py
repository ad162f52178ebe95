"""``process_bag``: run depth_node's pipeline over a recorded bag and write its outputs to a new MCAP bag.

Reads a ROS 1 or ROS 2 bag with rosbags (``AnyReader``), runs :class:`depth_ros.pipeline.DepthPipeline` (the very
code the node runs, with the node's parameters) on an image topic (sensor_msgs/Image or CompressedImage) and its
CameraInfo, and writes a rosbag2 (MCAP storage) with ``<namespace>/depth`` (32FC1 m, REP 118, the image's header),
``<namespace>/depth/camera_info``, ``<namespace>/points`` (optical frame) and ``<namespace>/occupancy``
(``grid_frame``, camera pose from the ``camera_to_base`` parameter); with ``--copy-input`` every input topic too
(ROS 1 messages converted to CDR). Output messages carry the input image's log time.

Serialisation: the messages are built with :mod:`depth_ros.ros.conversions` (the node's own builders) and serialised
by rclpy (``serialize_message``), so the bag holds the bytes the node would publish; rosbags' typestore only provides
the message definitions for the MCAP schemas.

The bag is written into a temporary folder beside the output and renamed when complete; on an error or Ctrl-C the
partial output is removed. A frame that cannot be used (corrupt message, unsupported encoding, undecodable or
oversized image, an image the network cannot take) is skipped with a warning naming topic and stamp, as the node
drops it; the other frames are written and the run then exits with status 1 and the count. ``--strict`` instead
stops at the first bad frame and writes nothing. A bag that cannot be read on (truncated, an MCAP chunk whose CRC
does not match: rosbags verifies chunk CRCs when the writer recorded them) always stops the run.

Example::

    process_bag recording/ processed/ --image-topic /camera/color/image_raw --params config/depth.yaml \
        --checkpoint da2-metric-indoor-small --copy-input
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from depth_ros.data.rosbag import IMAGE_TYPES, USE_RECTIFIED, BagReader, default_info_topic
from depth_ros.frame import Frame, NoCameraError
from depth_ros.ros.conversions import header_msg, stamp_ns
from depth_ros.tools.cli import run_cli, staged_output

if TYPE_CHECKING:
    from depth_ros.geometry.camera import PinholeCamera

log = logging.getLogger(__name__)

DEFAULT_IMAGE_TOPIC = "/camera/color/image_raw"
DEFAULT_NAMESPACE = "/depth_ros"


class BagCameraReader(BagReader):
    """Images and CameraInfo of one camera in a ROS 1 / ROS 2 bag (a :class:`~depth_ros.data.rosbag.BagReader`).

    Use as a context manager. CameraInfo messages are read once up front; each image gets the one with its stamp or
    else the nearest one of its frame_id (a warning, once, when that is more than ``tolerance`` s away).

    Args:
        path: rosbag2 folder, ``.mcap`` / ``.db3`` file, or ROS 1 ``.bag`` file.
        image_topic: sensor_msgs/Image or sensor_msgs/CompressedImage topic.
        info_topic: its sensor_msgs/CameraInfo; default ``camera_info`` beside ``image_topic`` (for
            ``.../image_raw/compressed`` beside ``image_raw``).
        use_rectified: intrinsics from P (rectified images) or K; default
            :data:`~depth_ros.data.rosbag.USE_RECTIFIED`.
        tolerance: seconds between image and CameraInfo stamps above which a warning is logged.

    Raises:
        FileNotFoundError: no such bag.
        BagError: unreadable bag (a ValueError naming the bag).
        ValueError: a missing topic or one of the wrong type (the message lists the bag's topics); an invalid
            CameraInfo.
    """

    def __init__(self, path: str | Path, image_topic: str = DEFAULT_IMAGE_TOPIC, info_topic: str | None = None,
                 use_rectified: bool = USE_RECTIFIED, tolerance: float = 0.1):
        super().__init__(path, use_rectified)
        self.image_topic = image_topic
        self.info_topic = info_topic or default_info_topic(image_topic)
        self.tolerance = tolerance
        self._warned: set[str] = set()
        try:
            self.image_connections = self.connections(image_topic, IMAGE_TYPES)
            self._cameras = self.cameras(self.info_topic, tolerance)
        except BaseException:
            self.close()
            raise

    @property
    def frame_count(self) -> int:
        """Number of messages on the image topic."""
        return sum(c.msgcount for c in self.image_connections)

    def camera_for(self, header, height: int, width: int) -> PinholeCamera | None:
        """The camera of an image of ``width`` x ``height`` px with this header, by
        :class:`~depth_ros.frame.CameraInfoCache`'s rule; None (warned once per frame_id) when none fits."""
        try:
            match = self._cameras.match(header.frame_id, stamp_ns(header), height, width)
        except NoCameraError as error:
            self._warn_once(f"no camera {header.frame_id}", f"{error} on {self.info_topic}: depth only, no points "
                                                            "or occupancy for its images")
            return None
        for kind, warning in (("size", match.size_warning), ("stamps", match.stamp_warning)):
            if warning:
                self._warn_once(f"{kind} {header.frame_id}", warning + "; warned once")
        return match.camera

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(text)

    def decode(self, connection, time_ns: int, raw) -> Frame:
        """Decode one message of the image topic (as yielded by :meth:`messages`) into a :class:`Frame` (camera
        None when no CameraInfo fits; named ``<topic> at <stamp> s``).

        Raises:
            ValueError: corrupt message or an image that cannot be decoded (names topic and stamp).
        """
        msg = self.deserialize(connection, time_ns, raw)
        rgb = self.decode_color(connection, msg)
        stamp = stamp_ns(msg.header)
        return Frame(rgb, self.camera_for(msg.header, *rgb.shape[:2]), stamp, msg.header.frame_id,
                     name=f"{connection.topic} at {stamp / 1e9:.9f} s")

    def messages(self, all_topics: bool = False) -> Iterator[tuple[object, int, object]]:
        """``(connection, log time ns, raw bytes)`` in log-time order: the image topic, or with ``all_topics`` all.

        Raises:
            BagError: the bag cannot be read (e.g. truncated).
        """
        return self.raw_messages(None if all_topics else self.image_connections)

    def frames(self) -> Iterator[tuple[int, Frame]]:
        """``(log time ns, frame)`` of every image, in log-time order (ValueError as :meth:`decode`)."""
        for connection, time_ns, raw in self.messages():
            yield time_ns, self.decode(connection, time_ns, raw)


@dataclass
class ProcessSummary:
    """What :func:`process_bag` wrote.

    Attributes:
        frames: frames processed (written).
        messages: output topic -> messages written.
        skipped: one ``<topic> at <stamp> s: <problem>`` line per frame skipped.
    """

    frames: int
    messages: dict[str, int]
    skipped: list[str]


def output_topic(namespace: str, name: str) -> str:
    """``namespace/name`` as an absolute topic name."""
    return "/" + "/".join(part for part in (*namespace.split("/"), name) if part)


def process_bag(input_bag: str | Path, output_bag: str | Path, config, *, pipeline=None,
                image_topic: str = DEFAULT_IMAGE_TOPIC, info_topic: str | None = None,
                namespace: str = DEFAULT_NAMESPACE, copy_input: bool = False,
                progress: bool = True, strict: bool = False) -> ProcessSummary:
    """Run the depth pipeline over a bag's images and write a new rosbag2 (MCAP, metadata version 8).

    Args:
        input_bag: ROS 1 / ROS 2 bag (see :class:`BagCameraReader`).
        output_bag: folder to create; must not exist. Written under a temporary name and renamed when complete.
        config: the node's :class:`~depth_ros.ros.params.NodeConfig` (model, ranges, cloud, grid, camera pose).
        pipeline: a :class:`~depth_ros.pipeline.DepthPipeline` to reuse; None builds one from ``config``.
        image_topic: image topic to process.
        info_topic: its CameraInfo topic (default: ``camera_info`` beside it).
        namespace: output topics are ``<namespace>/depth``, ``.../depth/camera_info``, ``.../points``,
            ``.../occupancy``.
        copy_input: also copy every topic of the input bag.
        progress: show a tqdm progress bar.
        strict: raise at the first frame that cannot be used (nothing written) instead of skipping it.

    Returns:
        :class:`ProcessSummary`.

    Raises:
        FileExistsError: the output exists.
        ValueError: see :class:`BagCameraReader`; an output topic that clashes with a copied one; with ``strict``,
            an image that cannot be used (names topic and stamp). Nothing is left behind at ``output_bag``.
        CheckpointError: the checkpoint cannot be loaded.
    """
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from depth_ros.geometry.transform import pose_matrix
    from depth_ros.pipeline import DepthPipeline
    from depth_ros.ros.outputs import OUTPUT_TOPICS, output_messages

    output_bag = Path(output_bag)
    if output_bag.exists():
        raise FileExistsError(f"{output_bag}: already exists; remove it or choose another output")
    topics = {name: output_topic(namespace, name) for name in OUTPUT_TOPICS}
    camera_to_grid = pose_matrix(config.camera_to_base)
    with BagCameraReader(input_bag, image_topic, info_topic, config.use_rectified,
                         config.camera_info_tolerance) as bag:
        if copy_input:
            clashes = sorted(set(topics.values()) & {c.topic for c in bag.reader.connections})
            if clashes:
                raise ValueError(f"output topic(s) {', '.join(clashes)} already exist in {bag.path}; choose another "
                                 "--namespace")
            unknown = sorted({c.msgtype for c in bag.reader.connections} - set(bag.ros2_typestore.fielddefs))
            if unknown:
                raise ValueError(f"{bag.path}: cannot copy ROS 1 messages of types without a ROS 2 definition in "
                                 f"rosbags: {', '.join(unknown)}; run without --copy-input")
        pipeline = pipeline or DepthPipeline.from_config(config)
        with staged_output(output_bag) as staging:
            writer = Writer(staging, version=8, storage_plugin=StoragePlugin.MCAP)
            with writer:
                typestore = get_typestore(Stores.LATEST)
                outputs = {name: writer.add_connection(topics[name], msgtype, typestore=typestore)
                           for name, msgtype in OUTPUT_TOPICS.items()}
                copies = {}
                if copy_input:
                    copies = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=bag.ros2_typestore)
                              for c in bag.reader.connections}
                counts = dict.fromkeys(topics.values(), 0)
                frames, skipped = 0, []
                image_ids = {c.id for c in bag.image_connections}
                with tqdm(total=bag.frame_count, desc="process_bag", unit="frame", disable=not progress) as bar:
                    for connection, time_ns, raw in bag.messages(all_topics=copy_input):
                        if copy_input:
                            writer.write(copies[connection.id], time_ns, bag.cdr(connection, raw))
                        if connection.id not in image_ids:
                            continue
                        bar.update()
                        try:
                            frame = bag.decode(connection, time_ns, raw)
                            try:
                                out = pipeline.run(frame.rgb, frame.camera, camera_to_grid)
                            except ValueError as exc:
                                raise ValueError(f"{bag.path}: {frame.name}: {exc}") from exc
                        except ValueError as exc:
                            if strict:
                                raise
                            log.warning("skipping frame: %s", exc)
                            skipped.append(str(exc))
                            continue
                        header = header_msg(frame.stamp_ns, frame.frame_id)
                        messages = output_messages(out, header, config.grid_frame, pipeline.grid_options.spec)
                        for name, msg in messages.items():
                            writer.write(outputs[name], time_ns, serialize_message(msg))
                            counts[topics[name]] += 1
                        frames += 1
    return ProcessSummary(frames, counts, skipped)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="process_bag", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="input bag: rosbag2 folder, .mcap/.db3 file or ROS 1 .bag")
    parser.add_argument("output", type=Path, help="output rosbag2 folder (MCAP) to create")
    parser.add_argument("--image-topic", default=DEFAULT_IMAGE_TOPIC,
                        help="sensor_msgs/Image or CompressedImage topic (default: %(default)s)")
    parser.add_argument("--info-topic", help="its CameraInfo topic (default: camera_info beside the image topic)")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                        help="namespace of the output topics depth, depth/camera_info, points, occupancy "
                             "(default: %(default)s)")
    parser.add_argument("--copy-input", action="store_true", help="copy every input topic into the output bag too")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first bad frame and write nothing (default: skip it, write the rest, exit 1)")
    parser.add_argument("--params", type=Path,
                        help="depth_node parameters file (e.g. config/depth.yaml); default: the node's defaults")
    parser.add_argument("--checkpoint", help="override the checkpoint parameter (file or model id)")
    parser.add_argument("--input-size", type=int, help="override input_size (px, multiple of 14, or 32 for PackNet)")
    parser.add_argument("--device", help="override device (auto, cpu, cuda, cuda:N)")
    parser.add_argument("--precision", choices=["fp32", "fp16", "bf16"], help="override precision")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def run() -> None:
        from depth_ros.ros.params import NodeConfig

        config = NodeConfig.from_params_file(args.params, checkpoint=args.checkpoint, input_size=args.input_size,
                                             device=args.device, precision=args.precision)
        summary = process_bag(args.input, args.output, config, image_topic=args.image_topic,
                              info_topic=args.info_topic, namespace=args.namespace, copy_input=args.copy_input,
                              strict=args.strict)
        written = ", ".join(f"{topic} {count}" for topic, count in summary.messages.items())
        log.info("%s: %d frames processed; messages: %s", args.output, summary.frames, written)
        if summary.skipped:
            total = summary.frames + len(summary.skipped)
            raise ValueError(f"{len(summary.skipped)} of {total} frames skipped (the others are in {args.output}): "
                             + "; ".join(summary.skipped))

    return run_cli("process_bag", run)


if __name__ == "__main__":
    sys.exit(main())
