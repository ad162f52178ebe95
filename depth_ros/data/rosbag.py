"""RGB-D pairs from ROS 1 / ROS 2 bags (sqlite3 or MCAP storage), read with rosbags' ``AnyReader``.

A colour topic (sensor_msgs/Image or CompressedImage), a depth topic registered to it (sensor_msgs/Image, REP 118:
32FC1 metres or 16UC1 millimetres) and the colour camera's CameraInfo. Colour and depth messages are paired by
header stamp within a tolerance. Decoding goes through :mod:`depth_ros.ros.conversions`, intrinsics through
:meth:`PinholeCamera.from_camera_info`, so bags decode exactly as the node decodes live messages.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from depth_ros.data.frames import RGBDFrame, RGBDSequence
from depth_ros.geometry.camera import PinholeCamera
from depth_ros.ros.conversions import compressed_to_rgb, depth_image_to_array, image_to_rgb, stamp_ns
from depth_ros.stamps import match_stamps

log = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
BAG_SUFFIXES = (".bag", ".mcap", ".db3")


def is_bag(path: Path) -> bool:
    """True for a rosbag2 folder (``metadata.yaml``) or a ``.bag`` / ``.mcap`` / ``.db3`` file."""
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (path.is_file() and path.suffix in BAG_SUFFIXES)


def open_bag(path: Path) -> AnyReader:
    """An opened rosbags ``AnyReader`` for a ROS 1 or ROS 2 bag; ROS 1 types resolve against the latest ROS 2 store.

    Raises:
        rosbags errors (AnyReaderError) for unreadable bags; callers turn them into messages naming the bag.
    """
    reader = AnyReader([path], default_typestore=get_typestore(Stores.LATEST))
    reader.open()
    return reader


def default_info_topic(image_topic: str) -> str:
    """``camera_info`` beside an image topic: ``/cam/image_raw[/compressed]`` -> ``/cam/camera_info``."""
    base = image_topic.removesuffix("/compressed")
    return base.rsplit("/", 1)[0] + "/camera_info"


def topic_connections(reader: AnyReader, path: Path, topic: str, types: tuple[str, ...]) -> list:
    """The connections of ``topic`` in an open bag, checked to carry one of ``types``.

    Raises:
        ValueError: the topic is missing or of another type; the message lists every topic of the bag.
    """
    connections = [c for c in reader.connections if c.topic == topic]
    listing = ", ".join(f"{c.topic} ({c.msgtype}, {c.msgcount} msgs)" for c in reader.connections)
    if not connections:
        raise ValueError(f"{path}: no topic {topic!r}; the bag's topics: {listing}")
    if any(c.msgtype not in types for c in connections):
        raise ValueError(f"{path}: topic {topic!r} has type {connections[0].msgtype}, expected "
                         f"{' or '.join(types)}; the bag's topics: {listing}")
    return connections


def _stamp(msg) -> float:
    return stamp_ns(msg.header) * 1e-9


class RosbagRGBD(RGBDSequence):
    """Colour/depth pairs of one bag, in colour-stamp order.

    Args:
        path: rosbag2 folder, ``.mcap`` / ``.db3`` file, or ROS 1 ``.bag`` file.
        rgb_topic: colour images (sensor_msgs/Image or sensor_msgs/CompressedImage).
        depth_topic: depth images registered to the colour camera (same size), 32FC1 or 16UC1.
        info_topic: the colour camera's CameraInfo; default ``camera_info`` beside ``rgb_topic``.
        max_dt: largest colour/depth header-stamp difference in seconds for a pair.
        use_rectified: intrinsics from P (rectified images) instead of K (raw images, the default).

    Raises:
        FileNotFoundError: the bag does not exist.
        ValueError: a topic is missing or has the wrong type (the message lists the bag's topics), no pair matches,
            or depth and colour sizes differ.
    """

    def __init__(self, path: str | Path, rgb_topic: str = "/camera/color/image_raw",
                 depth_topic: str = "/camera/depth/image_raw", info_topic: str | None = None,
                 max_dt: float = 0.02, use_rectified: bool = False):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such bag")
        self.rgb_topic, self.depth_topic = rgb_topic, depth_topic
        self.info_topic = info_topic or default_info_topic(rgb_topic)
        self._reader: AnyReader | None = None
        reader = self._open()
        rgb_conns = topic_connections(reader, self.path, self.rgb_topic, (IMAGE, COMPRESSED))
        depth_conns = topic_connections(reader, self.path, self.depth_topic, (IMAGE,))
        info_conns = topic_connections(reader, self.path, self.info_topic, (CAMERA_INFO,))
        _, _, info = next(self._messages(reader, info_conns))
        self.camera = PinholeCamera.from_camera_info(info, use_rectified=use_rectified)
        rgb = list(self._index(reader, rgb_conns))
        depth = sorted(self._index(reader, depth_conns))
        pairs = match_stamps(np.array([s for s, _ in rgb]), np.array([s for s, _ in depth]), max_dt)
        if not pairs:
            raise ValueError(f"{self.path}: no {self.rgb_topic} message has a {self.depth_topic} message within "
                             f"{max_dt} s")
        self.stamps = np.array([rgb[i][0] for i, _ in pairs])
        self.names = [f"{self.rgb_topic}@{s:.6f}" for s in self.stamps]
        self._locations = [(rgb[i][1], depth[j][1]) for i, j in pairs]
        log.info("%s: %d RGB-D pairs (%d colour, %d depth messages), %s", self.path, len(self), len(rgb), len(depth),
                 self.camera)

    def _open(self) -> AnyReader:
        if self._reader is None:
            self._reader = open_bag(self.path)
        return self._reader

    def close(self) -> None:
        """Close the bag (it reopens on the next :meth:`load`)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __getstate__(self):  # DataLoader workers open their own reader
        state = self.__dict__.copy()
        state["_reader"] = None
        return state

    @staticmethod
    def _messages(reader: AnyReader, conns, start: int | None = None, stop: int | None = None):
        for conn, time_ns, raw in reader.messages(connections=conns, start=start, stop=stop):
            yield conn, time_ns, reader.deserialize(raw, conn.msgtype)

    def _index(self, reader: AnyReader, conns):
        """(header stamp s, location) of every message; a location finds the message again: (topic, log time ns,
        header stamp)."""
        for conn, time_ns, msg in self._messages(reader, conns):
            if conn.msgtype == IMAGE and (int(msg.width), int(msg.height)) != (self.camera.width, self.camera.height):
                raise ValueError(
                    f"{self.path}: {conn.topic} images are {msg.width}x{msg.height} but the camera "
                    f"({self.info_topic}) is {self.camera.width}x{self.camera.height}: the depth topic must be "
                    "registered to the colour camera (e.g. aligned_depth_to_color)"
                )
            yield _stamp(msg), (conn.topic, time_ns, _stamp(msg))

    def _read(self, reader: AnyReader, location):
        topic, time_ns, stamp = location
        conns = [c for c in reader.connections if c.topic == topic]
        for conn, _, msg in self._messages(reader, conns, start=time_ns, stop=time_ns + 1):
            if _stamp(msg) == stamp:
                return conn.msgtype, msg
        raise ValueError(f"{self.path}: message of {topic} at {stamp:.6f} s disappeared from the bag")

    def load(self, index: int) -> RGBDFrame:
        reader = self._open()
        rgb_location, depth_location = self._locations[index]
        rgb_type, rgb_msg = self._read(reader, rgb_location)
        rgb = compressed_to_rgb(rgb_msg) if rgb_type == COMPRESSED else image_to_rgb(rgb_msg)
        depth = depth_image_to_array(self._read(reader, depth_location)[1])
        if rgb.shape[:2] != depth.shape:
            raise ValueError(f"{self.path}: frame {index}: colour {rgb.shape[:2]} and depth {depth.shape} differ")
        return RGBDFrame(rgb, depth, self.camera, float(self.stamps[index]), self.names[index])
