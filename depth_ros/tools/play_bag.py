"""``play_bag``: play a ROS 1 / ROS 2 bag through rclpy publishers with its recorded timing.

For pip installs, which have no ``ros2 bag play``. The bag is read with :class:`~depth_ros.data.rosbag.BagReader`
and every message is published as the serialized CDR bytes recorded in the bag (ROS 1 messages converted to CDR by
rosbags): nothing is deserialised or re-serialised, so **header stamps stay as recorded** and odometry, images and
CameraInfo keep consistent stamps (a node that compares stamps with its own clock sees old times; play with
``--clock`` and ``use_sim_time`` for such nodes).

Timing: a message with log time ``t`` is published ``(t - window start) / rate`` s of wall time after the start of
the window (of each loop with ``--loop``); when publishing falls behind, messages go out as fast as possible until
it catches up. The window is ``[bag start + start_offset, + duration)`` in log time.

QoS: topics recorded as latched (ROS 1 ``latching``, rosbag2 offered QoS with transient-local durability) and
``/tf_static`` are published reliable + TRANSIENT_LOCAL, history deep enough for all their messages, so late
subscribers still get them; their messages recorded before the window are published at its start (a
``/tf_static`` recorded at the bag's start is not lost with ``--start-offset``). Every other topic is reliable,
volatile, KEEP_LAST 10; subscribers with the sensor-data profile (best effort) match reliable publishers too.

A topic whose message type rclpy cannot import is skipped with one warning (e.g. ``tf2_msgs/msg/TFMessage``, which
has no pip wheel). With ``--clock``, rosgraph_msgs/Clock is published on ``/clock`` with the log time of each message
just before it.

Example::

    play_bag recording/ --rate 0.5 --topics /camera/color/image_raw/compressed /camera/color/camera_info --loop
    play_bag recording.bag --remap /camera/color/image_raw:=/camera/image --clock
"""

from __future__ import annotations

import argparse
import importlib
import logging
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from depth_ros.data.rosbag import BagReader
from depth_ros.tools.cli import run_cli

log = logging.getLogger(__name__)

LATCHED_TOPICS = ("/tf_static",)
"""Topics always published transient-local, whatever the bag recorded for them."""
QUEUE_DEPTH = 10  # KEEP_LAST depth of the volatile publishers
MAX_LATCHED_DEPTH = 1000  # bound of a latched topic's history (messages kept for late subscribers)
CLOCK_TOPIC = "/clock"


def message_class(msgtype: str):
    """The rclpy message class of ``pkg/msg/Name`` (rosidl_runtime_py's ``get_message`` when installed, else an
    import of ``pkg.msg``).

    Raises:
        ImportError: the type's Python package is not installed (or has no such message).
    """
    try:
        from rosidl_runtime_py.utilities import get_message
    except ImportError:
        get_message = None
    if get_message is not None:
        try:
            return get_message(msgtype)
        except (AttributeError, ModuleNotFoundError, ValueError) as exc:
            raise ImportError(f"cannot import {msgtype}: {exc}") from exc
    package, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise ImportError(f"cannot import {msgtype}: {exc}") from exc


def is_latched(connection) -> bool:
    """True when a rosbags connection was recorded latched: ROS 1 ``latching``, rosbag2 offered QoS with
    TRANSIENT_LOCAL durability, or a topic of :data:`LATCHED_TOPICS`."""
    if connection.topic in LATCHED_TOPICS or getattr(connection.ext, "latching", 0):
        return True
    profiles = getattr(connection.ext, "offered_qos_profiles", None) or []
    return any(getattr(getattr(qos, "durability", None), "name", "") == "TRANSIENT_LOCAL" for qos in profiles)


CDR_ENCAPSULATION = 4  # bytes of the encapsulation header before a CDR message body
_CDR_BYTE_ORDER = {b"\x00\x00": ">", b"\x00\x01": "<"}  # CDR_BE, CDR_LE representation ids (as rmw writes)
_STAMP = "iI"  # builtin_interfaces/Time: int32 sec, uint32 nanosec


def _stamp_format(data: bytes) -> str:
    order = _CDR_BYTE_ORDER.get(bytes(data[:2]))
    if order is None or len(data) < CDR_ENCAPSULATION + struct.calcsize(_STAMP):
        raise ValueError(f"not a plain CDR message with a header (representation id {bytes(data[:2]).hex()}, "
                         f"{len(data)} bytes)")
    return order + _STAMP


def header_stamp_ns(data: bytes) -> int:
    """The ``header.stamp`` in ns of a CDR-serialised message whose first field is a std_msgs/Header
    (sensor_msgs/Image, CompressedImage, CameraInfo, ...), read in place: the stamp is the body's first 8 bytes.

    Raises:
        ValueError: not plain CDR (big or little endian) or too short to hold a stamp.
    """
    sec, nanosec = struct.unpack_from(_stamp_format(data), data, CDR_ENCAPSULATION)
    return sec * 1_000_000_000 + nanosec


def restamped(data: bytes, stamp_ns: int) -> bytes:
    """A copy of a CDR message with a std_msgs/Header first (see :func:`header_stamp_ns`) stamped ``stamp_ns`` ns,
    every other byte as given: for :class:`BagPlayer` rewrite hooks.

    Raises:
        ValueError: as :func:`header_stamp_ns`. struct.error: a stamp beyond builtin_interfaces/Time's int32 s.
    """
    out = bytearray(data)
    struct.pack_into(_stamp_format(data), out, CDR_ENCAPSULATION, *divmod(stamp_ns, 1_000_000_000))
    return bytes(out)


def parse_remap(rules: Iterable[str]) -> dict[str, str]:
    """``old:=new`` rules as {old topic: new topic}.

    Raises:
        ValueError: a rule without ``:=`` or with an empty side.
    """
    remap = {}
    for rule in rules:
        old, sep, new = rule.partition(":=")
        if not sep or not old or not new:
            raise ValueError(f"bad remap rule {rule!r}: expected old:=new")
        remap[old] = new
    return remap


@dataclass
class PlaySummary:
    """What :meth:`BagPlayer.play` published.

    Attributes:
        messages: output topic (after remapping) -> messages published, over all loops (latched ones included).
        wall_time: s of wall time the playback took.
        loops: loops started (1 without ``loop``); the last one may be incomplete after :meth:`BagPlayer.stop`.
        skipped: topic -> message type, for topics skipped because rclpy cannot import their type.
    """

    messages: dict[str, int] = field(default_factory=dict)
    wall_time: float = 0.0
    loops: int = 0
    skipped: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        """One-line summary: messages per topic, wall time and loops."""
        counts = ", ".join(f"{topic} {count}" for topic, count in sorted(self.messages.items())) or "nothing"
        skipped = f"; skipped (type not importable): {', '.join(sorted(self.skipped))}" if self.skipped else ""
        return (f"played {sum(self.messages.values())} messages ({counts}) in {self.wall_time:.2f} s wall time, "
                f"{self.loops} loop{'s' if self.loops != 1 else ''}{skipped}")


class BagPlayer:
    """Publishes a bag's messages on an rclpy node with the recorded timing (see the module docstring).

    The publishers are created in the constructor, so callers can wait for subscribers to match
    (:meth:`wait_for_subscribers`) before :meth:`play`. :meth:`stop` (from another thread) ends :meth:`play` early.

    Args:
        bag: an open :class:`~depth_ros.data.rosbag.BagReader` (the caller closes it).
        node: the rclpy node that owns the publishers (destroyed with it, or by :meth:`destroy`).
        rate: playback speed factor (2: twice as fast as recorded); > 0.
        start_offset: s of log time after the bag's start where playback begins; >= 0.
        duration: s of log time played from there; None: to the end of the bag.
        loop: play the window again and again until :meth:`stop` (or Ctrl-C).
        topics: topics to play; None: every topic.
        remap: {bag topic: published topic}.
        clock: publish rosgraph_msgs/Clock on ``/clock`` from the log times (a warning and no clock when
            rosgraph_msgs is not importable).
        rewrite: ``rewrite(bag topic, s of wall time since play() started, CDR bytes)`` returns what is published
            instead: CDR bytes or a message of the topic's type (for fault injection and tests; None: as recorded).

    Attributes:
        publishers: bag topic -> rclpy publisher, for the topics played.
        skipped: topic -> message type of the topics skipped (type not importable).

    Raises:
        ValueError: a non-positive rate, a negative start offset or a non-positive duration, a topic the bag does
            not have (the message lists the bag's topics), or no topic left to play.
    """

    def __init__(self, bag: BagReader, node, *, rate: float = 1.0, start_offset: float = 0.0,
                 duration: float | None = None, loop: bool = False, topics: Iterable[str] | None = None,
                 remap: Mapping[str, str] | None = None, clock: bool = False,
                 rewrite: Callable[[str, float, bytes], object] | None = None):
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if not start_offset >= 0:
            raise ValueError(f"start offset must be >= 0 s, got {start_offset}")
        if duration is not None and not duration > 0:
            raise ValueError(f"duration must be > 0 s, got {duration}")
        self.bag, self.node, self.rate, self.loop, self.rewrite = bag, node, rate, loop, rewrite
        self.remap = dict(remap or {})
        self.start_ns = bag.reader.start_time + round(start_offset * 1e9)
        self.stop_ns = None if duration is None else self.start_ns + round(duration * 1e9)
        if topics is None:
            connections = list(bag.reader.connections)
        else:
            connections = [c for topic in dict.fromkeys(topics) for c in bag.connections(topic)]
        self.publishers: dict[str, object] = {}
        self.skipped: dict[str, str] = {}
        self._connections, self._latched = [], []
        for connection in connections:
            if self._publisher(connection) is not None:
                self._connections.append(connection)
                if is_latched(connection):
                    self._latched.append(connection)
        if not self._connections:
            raise ValueError(f"{bag.path}: no topic to play (every selected topic's type is unavailable to rclpy: "
                             f"{', '.join(sorted(self.skipped))})")
        self._clock = self._clock_publisher() if clock else None
        self._stop = threading.Event()

    def _publisher(self, connection):
        topic = connection.topic
        if topic in self.skipped:
            return None
        if topic in self.publishers:
            if self.publishers[topic].msg_type.__name__ != connection.msgtype.rsplit("/", 1)[-1]:
                log.warning("%s: %s has a second type %s; its messages are skipped", self.bag.path, topic,
                            connection.msgtype)
                return None
            return self.publishers[topic]
        try:
            msg_type = message_class(connection.msgtype)
        except ImportError:
            log.warning("skipping %s: rclpy cannot import its type %s", topic, connection.msgtype)
            self.skipped[topic] = connection.msgtype
            return None
        self.publishers[topic] = self.node.create_publisher(msg_type, self.remap.get(topic, topic),
                                                            self._qos(connection))
        return self.publishers[topic]

    def _qos(self, connection):
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        if is_latched(connection):
            count = sum(c.msgcount for c in self.bag.reader.connections if c.topic == connection.topic)
            return QoSProfile(depth=max(1, min(count, MAX_LATCHED_DEPTH)), reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.TRANSIENT_LOCAL)
        return QoSProfile(depth=QUEUE_DEPTH, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)

    def _clock_publisher(self):
        try:
            from rosgraph_msgs.msg import Clock
        except ImportError:
            log.warning("no /clock: rclpy cannot import rosgraph_msgs/msg/Clock")
            return None
        return self.node.create_publisher(Clock, CLOCK_TOPIC, QUEUE_DEPTH)

    def wait_for_subscribers(self, timeout: float, topics: Iterable[str] | None = None) -> bool:
        """Wait up to ``timeout`` s until every publisher of ``topics`` (bag topics; None: all played) has matched at
        least one subscriber; True when they have."""
        publishers = [self.publishers[t] for t in (self.publishers if topics is None else topics)]
        deadline = time.monotonic() + timeout
        while not all(p.get_subscription_count() > 0 for p in publishers):
            if time.monotonic() > deadline or self._stop.wait(0.02):
                return False
        return True

    def stop(self) -> None:
        """End :meth:`play` at its next message (thread-safe)."""
        self._stop.set()

    def messages(self) -> Iterator[tuple[object, int, bytes, bool]]:
        """One pass over the window: ``(connection, log time ns, CDR bytes, before window)`` in log-time order.

        The messages of latched topics recorded before the window come first, flagged ``True`` (published at the
        window's start).

        Raises:
            BagError: the bag cannot be read (truncated, corrupt) or a ROS 1 message does not convert to CDR.
        """
        if self._latched and self.start_ns > self.bag.reader.start_time:
            for connection, time_ns, raw in self.bag.raw_messages(self._latched, stop=self.start_ns):
                yield connection, time_ns, self.bag.cdr(connection, raw), True
        for connection, time_ns, raw in self.bag.raw_messages(self._connections, self.start_ns, self.stop_ns):
            yield connection, time_ns, self.bag.cdr(connection, raw), False

    def _publish_clock(self, time_ns: int) -> None:
        from builtin_interfaces.msg import Time
        from rosgraph_msgs.msg import Clock

        self._clock.publish(Clock(clock=Time(sec=time_ns // 1_000_000_000, nanosec=time_ns % 1_000_000_000)))

    def play(self) -> PlaySummary:
        """Publish the window (again and again with ``loop``) with the recorded timing; returns what was published.

        Returns when the window is done (without ``loop``, or when it holds no message) or after :meth:`stop`; a
        KeyboardInterrupt propagates.

        Raises:
            BagError: the bag cannot be read (messages published before the bad part stay published).
        """
        summary = PlaySummary(skipped=dict(self.skipped))
        counts: Counter[str] = Counter()
        started = time.monotonic()
        try:
            while not self._stop.is_set():
                summary.loops += 1
                loop_start, published = time.monotonic(), sum(counts.values())
                for connection, time_ns, data, early in self.messages():
                    if not early:
                        delay = loop_start + (time_ns - self.start_ns) / 1e9 / self.rate - time.monotonic()
                        if delay > 0 and self._stop.wait(delay):
                            break
                    if self._stop.is_set():
                        break
                    if self._clock is not None:
                        self._publish_clock(max(time_ns, self.start_ns))
                    if self.rewrite is not None:
                        data = self.rewrite(connection.topic, time.monotonic() - started, data)
                    self.publishers[connection.topic].publish(data)
                    counts[self.remap.get(connection.topic, connection.topic)] += 1
                if not self.loop or sum(counts.values()) == published:  # an empty window is not looped
                    break
        finally:
            summary.messages = dict(counts)
            summary.wall_time = time.monotonic() - started
        return summary

    def destroy(self) -> None:
        """Destroy the publishers (the node stays)."""
        for publisher in [*self.publishers.values(), self._clock]:
            if publisher is not None:
                self.node.destroy_publisher(publisher)
        self.publishers = {}
        self._clock = None


def play_bag(path: str | Path, *, delay: float = 0.5, args: list[str] | None = None, **options) -> PlaySummary:
    """Play a bag on a node ``play_bag`` of its own rclpy context; returns what was published.

    Args:
        path: the bag (see :class:`~depth_ros.data.rosbag.BagReader`).
        delay: s to wait after creating the publishers, so subscribers can discover them (no more once every
            publisher has matched a subscriber).
        args: ROS arguments for ``rclpy.init`` (``--ros-args ...``).
        options: keyword arguments of :class:`BagPlayer`.

    Raises:
        FileNotFoundError: no such bag. BagError: the bag cannot be opened or read (one line naming the bag).
        ValueError: bad options (see :class:`BagPlayer`).
        KeyboardInterrupt: Ctrl-C (the node and context are shut down first).
    """
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    from depth_ros.ros.dds import use_shipped_fastdds_profile

    use_shipped_fastdds_profile()
    with BagReader(path) as bag:
        context = rclpy.Context()
        # Python's own SIGINT handling: Ctrl-C is a KeyboardInterrupt wherever playback is
        rclpy.init(args=args, context=context, signal_handler_options=SignalHandlerOptions.NO)
        try:
            node = rclpy.create_node("play_bag", context=context)
            player = BagPlayer(bag, node, **options)
            player.wait_for_subscribers(delay)
            summary = player.play()
            log.info("%s: %s", bag.path, summary.line())
            return summary
        finally:
            context.try_shutdown()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="play_bag", description=__doc__.split("\n\n")[0])
    parser.add_argument("bag", type=Path, help="rosbag2 folder, .mcap / .db3 file or ROS 1 .bag")
    parser.add_argument("--rate", type=float, default=1.0, help="speed factor (default: %(default)s)")
    parser.add_argument("--start-offset", type=float, default=0.0, help="s after the bag's start to begin at")
    parser.add_argument("--duration", type=float, help="s of the bag to play (default: to its end)")
    parser.add_argument("--loop", action="store_true", help="play again and again until Ctrl-C")
    parser.add_argument("--topics", nargs="+", help="topics to play (default: all)")
    parser.add_argument("--clock", action="store_true", help="publish rosgraph_msgs/Clock on /clock from bag time")
    parser.add_argument("--remap", nargs="+", default=[], metavar="OLD:=NEW", help="publish topic OLD as NEW")
    parser.add_argument("--delay", type=float, default=0.5,
                        help="s to let subscribers discover the publishers before playing (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.rate > 0:
        parser.error(f"--rate must be > 0, got {args.rate}")
    if args.start_offset < 0 or (args.duration is not None and not args.duration > 0) or args.delay < 0:
        parser.error("--start-offset and --delay must be >= 0, --duration > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``play_bag``. Only what follows ``--ros-args`` goes to rcl: play_bag's own ``--remap
    OLD:=NEW`` rules rename its publishers and never reach rcl (which would take them as deprecated remap rules)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    split = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    args = parse_args(argv[:split])

    def run() -> None:
        play_bag(args.bag, delay=args.delay, args=["play_bag", *argv[split:]], rate=args.rate,
                 start_offset=args.start_offset, duration=args.duration, loop=args.loop, topics=args.topics,
                 remap=parse_remap(args.remap), clock=args.clock)

    return run_cli("play_bag", run)


if __name__ == "__main__":
    sys.exit(main())
