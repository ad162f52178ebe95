"""The one bag layer: ROS 1 / ROS 2 bags (sqlite3 or MCAP storage) read with rosbags' ``AnyReader``.

:class:`BagReader` opens a bag, lists and checks its topics, indexes a topic's messages by header stamp, reads and
deserialises them, and decodes images and CameraInfo with the node's own decoders (:mod:`depth_ros.ros.conversions`,
:meth:`PinholeCamera.from_camera_info`), so a bag decodes exactly as the node decodes live messages:

- colour: sensor_msgs/Image (rgb8, bgr8, ...) or CompressedImage (jpeg / png, image_transport ``compressed``);
- depth: sensor_msgs/Image (REP 118: 32FC1 metres, 16UC1 millimetres) or CompressedImage in image_transport's
  ``compressedDepth`` layout (16UC1 or 32FC1 png); metres with NaN invalid;
- CameraInfo: intrinsics from P or K per :data:`USE_RECTIFIED`.

Everything that reads bags is built on it: :class:`RosbagRGBD` (training, evaluation), process_bag's
``BagCameraReader`` (also the demo's ``BagPlayback``), play_bag's ``BagPlayer``. A bag that cannot be opened or read
(truncated, corrupt) raises one :class:`BagError` naming the bag, which the command-line tools print as one line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_typestore

from depth_ros.data.frames import RGBDSequence
from depth_ros.frame import CameraInfoCache, Frame
from depth_ros.geometry.camera import PinholeCamera
from depth_ros.ros.conversions import (
    compressed_to_rgb,
    depth_msg_to_array,
    image_to_rgb,
    stamp_ns,
)
from depth_ros.stamps import match_stamps

log = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
CAMERA_INFO_TOLERANCE = 0.1
"""Seconds between an image and the CameraInfo it is paired with above which the bag readers warn (once)."""
IMAGE_TYPES = (IMAGE, COMPRESSED)  # colour and depth topics alike
BAG_SUFFIXES = (".bag", ".mcap", ".db3")

USE_RECTIFIED = True
"""Where every bag reader takes the intrinsics from by default: CameraInfo P (True) or K (False).

P, as image_geometry's ``PinholeCameraModel`` and depth_node's ``use_rectified`` parameter default: training on a
bag then sees the focal length the node uses on the same camera at inference. The two differ only for raw
(distorted) images, where K is the raw camera's matrix; pass ``use_rectified=False`` for those, and set the node's
parameter alike."""


class BagError(ValueError):
    """A bag that cannot be opened or read (missing storage file, truncated, corrupt message).

    Its message is one line ``<bag path>: <what>: <cause>``, e.g. ``rec/: cannot open bag: File end magic is
    invalid``.
    """


@contextmanager
def _bag_errors(path: Path, what: str):
    """Turn rosbags' own exceptions (and OSError) inside the block into a :class:`BagError` ``<path>: <what>: ...``."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, BagError) or not (type(exc).__module__.startswith("rosbags") or isinstance(exc, OSError)):
            raise
        raise BagError(f"{path}: {what}: {exc}") from exc


def is_bag(path: Path) -> bool:
    """True for a rosbag2 folder (``metadata.yaml``) or a ``.bag`` / ``.mcap`` / ``.db3`` file."""
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (path.is_file() and path.suffix in BAG_SUFFIXES)


def default_info_topic(image_topic: str) -> str:
    """``camera_info`` beside an image topic: ``/cam/image_raw`` (or ``.../compressed``, ``.../compressedDepth``) ->
    ``/cam/camera_info``."""
    base = image_topic.removesuffix("/compressed").removesuffix("/compressedDepth")
    return base.rsplit("/", 1)[0] + "/camera_info"


@dataclass(frozen=True)
class MessageRef:
    """Where one message is in a bag, and its header stamp (see :meth:`BagReader.index`).

    Attributes:
        topic: its topic.
        msgtype: its type, e.g. ``sensor_msgs/msg/Image``.
        time_ns: its log (receive) time in nanoseconds.
        stamp_ns: its ``header.stamp`` in nanoseconds.
    """

    topic: str
    msgtype: str
    time_ns: int
    stamp_ns: int

    @property
    def stamp(self) -> float:
        """``header.stamp`` in seconds."""
        return self.stamp_ns * 1e-9


class BagReader:
    """One ROS 1 / ROS 2 bag (rosbag2 folder, ``.mcap`` / ``.db3`` file, or ROS 1 ``.bag``), opened with rosbags.

    ROS 1 message types resolve against rosbags' latest ROS 2 store. Use as a context manager or call
    :meth:`close`; a closed (or unpickled, e.g. in a DataLoader worker) reader reopens on its next read.

    Args:
        path: the bag.
        use_rectified: :meth:`camera` reads CameraInfo P (True) or K (False); default :data:`USE_RECTIFIED`.

    Attributes:
        path: the bag's path.
        use_rectified: as given.

    Raises:
        FileNotFoundError: no such bag.
        BagError: the bag cannot be opened (e.g. ``File end magic is invalid`` for a truncated MCAP).
    """

    def __init__(self, path: str | Path, use_rectified: bool = USE_RECTIFIED):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such bag")
        self.use_rectified = use_rectified
        self._reader: AnyReader | None = self._open()

    def _open(self) -> AnyReader:
        with _bag_errors(self.path, "cannot open bag"):
            reader = AnyReader([self.path], default_typestore=get_typestore(Stores.LATEST))
            reader.open()
        return reader

    @property
    def reader(self) -> AnyReader:
        """The open rosbags ``AnyReader`` (opened again after :meth:`close`)."""
        if self._reader is None:
            self._reader = self._open()
        return self._reader

    def close(self) -> None:
        """Close the bag (it reopens on the next read)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):  # a pickled copy (DataLoader worker) opens its own reader
        state = self.__dict__.copy()
        state["_reader"] = None
        return state

    def has_topic(self, topic: str) -> bool:
        """True when the bag has ``topic`` (any type)."""
        return any(c.topic == topic for c in self.reader.connections)

    def connections(self, topic: str, types: Iterable[str] | None = None) -> list:
        """The rosbags connections of ``topic``, checked to carry one of ``types`` (None: any type).

        Raises:
            ValueError: the topic is missing or of another type; the message lists every topic of the bag as
                ``topic (type, N msgs)``.
        """
        connections = [c for c in self.reader.connections if c.topic == topic]
        listing = ", ".join(f"{c.topic} ({c.msgtype}, {c.msgcount} msgs)" for c in self.reader.connections)
        if not connections:
            raise ValueError(f"{self.path}: no topic {topic!r}; the bag's topics: {listing}")
        types = None if types is None else tuple(types)
        if types is not None and any(c.msgtype not in types for c in connections):
            raise ValueError(f"{self.path}: topic {topic!r} has type {connections[0].msgtype}, expected "
                             f"{' or '.join(types)}; the bag's topics: {listing}")
        return connections

    def raw_messages(self, connections=None, start: int | None = None,
                     stop: int | None = None) -> Iterator[tuple[object, int, object]]:
        """``(connection, log time ns, raw bytes)`` in log-time order, of ``connections`` (None: every topic),
        log times in ``[start, stop)`` ns.

        Raises:
            BagError: the bag cannot be read (e.g. a corrupt chunk).
        """
        with _bag_errors(self.path, "cannot read bag"):
            yield from self.reader.messages(connections=connections, start=start, stop=stop)

    def deserialize(self, connection, time_ns: int, raw):
        """One message as a rosbags dataclass.

        Raises:
            BagError: a corrupt message (names type, topic and log time).
        """
        with _bag_errors(self.path, f"corrupt {connection.msgtype} message on {connection.topic} at log time "
                                   f"{time_ns / 1e9:.9f} s"):
            return self.reader.deserialize(raw, connection.msgtype)

    def topic_messages(self, topic: str, types: Iterable[str] | None = None) -> Iterator[tuple[object, int, object]]:
        """``(connection, log time ns, message)`` of ``topic`` in log-time order (ValueError / BagError as
        :meth:`connections`, :meth:`raw_messages`, :meth:`deserialize`)."""
        for connection, time_ns, raw in self.raw_messages(self.connections(topic, types)):
            yield connection, time_ns, self.deserialize(connection, time_ns, raw)

    def index(self, topic: str, types: Iterable[str] | None = None) -> list[MessageRef]:
        """Every message of ``topic`` (which has a std_msgs/Header), sorted by header stamp (stable for equal stamps).

        Reads and deserialises the whole topic once; :meth:`read` finds a message again.

        Raises:
            ValueError / BagError: as :meth:`topic_messages`.
        """
        refs = [MessageRef(c.topic, c.msgtype, time_ns, stamp_ns(msg.header))
                for c, time_ns, msg in self.topic_messages(topic, types)]
        return sorted(refs, key=lambda ref: ref.stamp_ns)

    def read(self, ref: MessageRef):
        """The message ``ref`` points at, deserialised.

        Raises:
            BagError: the message cannot be read, or is no longer in the bag.
        """
        connections = [c for c in self.reader.connections if c.topic == ref.topic]
        for connection, time_ns, raw in self.raw_messages(connections, ref.time_ns, ref.time_ns + 1):
            msg = self.deserialize(connection, time_ns, raw)
            if stamp_ns(msg.header) == ref.stamp_ns:
                return msg
        raise BagError(f"{self.path}: no {ref.topic} message with stamp {ref.stamp:.9f} s at log time "
                       f"{ref.time_ns / 1e9:.9f} s")

    @contextmanager
    def _decoding(self, topic: str, msg):
        try:
            yield
        except ValueError as exc:
            raise ValueError(f"{self.path}: {topic} at {stamp_ns(msg.header) / 1e9:.9f} s: {exc}") from exc

    def decode_color(self, source, msg) -> np.ndarray:
        """A colour message as (H, W, 3) uint8 RGB.

        Args:
            source: its connection or :class:`MessageRef` (``topic`` and ``msgtype``): sensor_msgs/Image (see
                :func:`~depth_ros.ros.conversions.image_to_rgb`) or CompressedImage jpeg / png.
            msg: the message.

        Raises:
            ValueError: an image that cannot be decoded (names bag, topic and stamp).
        """
        with self._decoding(source.topic, msg):
            return compressed_to_rgb(msg) if source.msgtype == COMPRESSED else image_to_rgb(msg)

    def decode_depth(self, source, msg) -> np.ndarray:
        """A depth message as (H, W) float32 metres along the optical axis, NaN where invalid (REP 118).

        Args:
            source: its connection or :class:`MessageRef`: sensor_msgs/Image 32FC1 (m) / 16UC1 (mm), or
                CompressedImage in image_transport's compressedDepth layout (see
                :func:`~depth_ros.ros.conversions.depth_msg_to_array`).
            msg: the message.

        Raises:
            ValueError: an image that cannot be decoded (names bag, topic and stamp).
        """
        with self._decoding(source.topic, msg):
            return depth_msg_to_array(msg)

    def camera(self, source, msg) -> PinholeCamera:
        """The intrinsics a sensor_msgs/CameraInfo describes, from P or K per ``use_rectified``.

        Raises:
            ValueError: an invalid CameraInfo (names bag, topic and stamp).
        """
        with self._decoding(source.topic, msg):
            return PinholeCamera.from_camera_info(msg, use_rectified=self.use_rectified)

    def cameras(self, info_topic: str, tolerance: float = CAMERA_INFO_TOLERANCE) -> CameraInfoCache:
        """Every CameraInfo on ``info_topic`` by frame_id and stamp, for the one pairing rule
        (:meth:`CameraInfoCache.match <depth_ros.frame.CameraInfoCache.match>`).

        Args:
            info_topic: a sensor_msgs/CameraInfo topic.
            tolerance: seconds between image and CameraInfo stamps above which a match carries a warning.

        Raises:
            ValueError: missing topic, wrong type or an invalid CameraInfo.
            BagError: as :meth:`topic_messages`.
        """
        cameras = CameraInfoCache(tolerance, capacity=None)
        for connection, _, msg in self.topic_messages(info_topic, (CAMERA_INFO,)):
            cameras.add(msg.header.frame_id, stamp_ns(msg.header), self.camera(connection, msg))
        return cameras

    @property
    def ros2_typestore(self):
        """Typestore with the ROS 2 definitions of this bag's types: the bag's own (rosbag2) or rosbags' latest
        ROS 2 store (ROS 1 bags, whose standard messages have the same CDR layout there)."""
        return self.reader.typestore if self.reader.is2 else get_typestore(Stores.LATEST)

    def cdr(self, connection, raw) -> bytes:
        """A message of this bag as CDR bytes (rosbag2 data is CDR already; ROS 1 data is converted).

        Raises:
            BagError: a ROS 1 message that does not convert (names topic and type).
        """
        if self.reader.is2:
            return raw
        with _bag_errors(self.path, f"cannot convert {connection.msgtype} on {connection.topic} to CDR"):
            return self.ros2_typestore.ros1_to_cdr(raw, connection.msgtype)


class RosbagRGBD(RGBDSequence):
    """Colour images of one bag with their registered depth, in colour-stamp order (a :class:`BagReader` view).

    Colour and depth messages pair by header stamp (:func:`depth_ros.stamps.match_stamps`); without a depth topic
    every colour image is a frame with ``depth=None`` (self-supervised training from images and poses).

    Args:
        path: rosbag2 folder, ``.mcap`` / ``.db3`` file, or ROS 1 ``.bag`` file.
        rgb_topic: colour images (sensor_msgs/Image, or CompressedImage jpeg / png).
        depth_topic: depth registered to the colour camera (same size): sensor_msgs/Image 32FC1 / 16UC1 or
            image_transport compressedDepth CompressedImage; None: no depth.
        info_topic: the colour camera's CameraInfo; default ``camera_info`` beside ``rgb_topic``.
        max_dt: largest colour/depth header-stamp difference in seconds for a pair.
        use_rectified: intrinsics from CameraInfo P (True) or K (False); default :data:`USE_RECTIFIED`.

    Attributes:
        bag: the :class:`BagReader`.

    Raises:
        FileNotFoundError: the bag does not exist.
        BagError: the bag cannot be opened or read.
        ValueError: a topic is missing or has the wrong type (the message lists the bag's topics), or no colour image
            has a depth partner. :meth:`load` raises ValueError for an undecodable image or depth of another size
            than the colour image.
    """

    def __init__(self, path: str | Path, rgb_topic: str = "/camera/color/image_raw",
                 depth_topic: str | None = "/camera/depth/image_raw", info_topic: str | None = None,
                 max_dt: float = 0.02, use_rectified: bool = USE_RECTIFIED):
        self.bag = BagReader(path, use_rectified)
        self.path = self.bag.path
        self.rgb_topic, self.depth_topic = rgb_topic, depth_topic
        self.info_topic = info_topic or default_info_topic(rgb_topic)
        for topic in (rgb_topic, depth_topic):  # every topic checked before anything is read
            if topic is not None:
                self.bag.connections(topic, IMAGE_TYPES)
        self._cameras = self.bag.cameras(self.info_topic)
        self._warned: set[str] = set()
        rgb = self.bag.index(rgb_topic, IMAGE_TYPES)
        if depth_topic is None:
            self._refs = [(ref, None) for ref in rgb]
            depth_count = 0
        else:
            depth = self.bag.index(depth_topic, IMAGE_TYPES)
            pairs = match_stamps(np.array([r.stamp for r in rgb]), np.array([r.stamp for r in depth]), max_dt)
            if not pairs:
                raise ValueError(f"{self.path}: no {rgb_topic} message has a {depth_topic} message within {max_dt} s")
            self._refs = [(rgb[i], depth[j]) for i, j in pairs]
            depth_count = len(depth)
        self.stamps = np.array([ref.stamp for ref, _ in self._refs])
        self.names = [f"{rgb_topic}@{s:.6f}" for s in self.stamps]
        self.frame_id = self.bag.read(self._refs[0][0]).header.frame_id if self._refs else None
        self.camera = None  # the first frame's, below: each frame carries its own
        self.camera = self.load(0).camera if self._refs else None
        log.info("%s: %d frames (%d colour, %d depth messages), %s", self.path, len(self), len(rgb), depth_count,
                 self.camera)

    def close(self) -> None:
        """Close the bag (it reopens on the next :meth:`load`)."""
        self.bag.close()

    def load(self, index: int) -> Frame:
        rgb_ref, depth_ref = self._refs[index]
        rgb = self.bag.decode_color(rgb_ref, self.bag.read(rgb_ref))
        depth = None if depth_ref is None else self.bag.decode_depth(depth_ref, self.bag.read(depth_ref))
        if depth is not None and depth.shape != rgb.shape[:2]:
            raise ValueError(f"{self.path}: frame {index} ({self.names[index]}): colour {rgb.shape[:2]} and depth "
                             f"{depth.shape} differ: the depth topic must be registered to the colour camera (e.g. "
                             "aligned_depth_to_color)")
        try:
            match = self._cameras.match(self.frame_id, rgb_ref.stamp_ns, *rgb.shape[:2])
        except ValueError as error:
            raise ValueError(f"{self.path}: frame {index} ({self.names[index]}): {error} on {self.info_topic}") \
                from None
        for warning in (match.size_warning, match.stamp_warning):
            if warning and warning not in self._warned:
                self._warned.add(warning)
                log.warning("%s: %s", self.path, warning)
        return replace(self.frame(index, rgb, depth), camera=match.camera)
