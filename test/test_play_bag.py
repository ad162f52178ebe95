"""play_bag over real ROS 2 (localhost) on the 7-Scenes odometry bag: the recorded bytes and stamps arrive in order
with the recorded spacing / rate; topic selection, remapping, /clock and looping; the CLI's one-line errors, the
refused rate and Ctrl-C."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from depth_ros.data.rosbag import BagReader
from depth_ros.tools.play_bag import BagPlayer, header_stamp_ns, is_latched, parse_remap, restamped

BAG = "7scenes_redkitchen_odom/bag"
IMAGE = "/camera/color/image_raw/compressed"
INFO = "/camera/color/camera_info"
ODOM = "/odom"
TYPES = {IMAGE: "sensor_msgs/msg/CompressedImage", INFO: "sensor_msgs/msg/CameraInfo", ODOM: "nav_msgs/msg/Odometry"}
TIMEOUT = 30.0  # s, bound of every wait


@pytest.fixture
def bag(shared_data):
    with BagReader(shared_data / BAG) as reader:
        yield reader


class Peer:
    """A subscriber node and a player node in one rclpy context of this process; records (arrival time, bytes)."""

    def __init__(self):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.subscriber = rclpy.create_node("play_bag_test_subscriber", context=self.context)
        self.player_node = rclpy.create_node("play_bag_test_player", context=self.context)
        self.received: dict[str, list[tuple[float, bytes]]] = {}
        self.lock = threading.Condition()
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.subscriber)
        self.spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinner.start()

    def subscribe(self, topic: str, msg_type) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self.received[topic] = []
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.subscriber.create_subscription(msg_type, topic, lambda data, t=topic: self._record(t, data), qos,
                                            raw=True)

    def _record(self, topic: str, data: bytes) -> None:
        with self.lock:
            self.received[topic].append((time.monotonic(), data))
            self.lock.notify_all()

    def wait_until(self, condition, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        with self.lock:
            while not condition():
                assert time.monotonic() < deadline, f"no {what} within {TIMEOUT} s"
                self.lock.wait(0.1)

    def player(self, bag, **options) -> BagPlayer:
        player = BagPlayer(bag, self.player_node, **options)
        assert player.wait_for_subscribers(TIMEOUT, [t for t in player.publishers
                                                     if player.remap.get(t, t) in self.received])
        return player

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.spinner.join(timeout=2.0)
        self.context.try_shutdown()


@pytest.fixture
def peer():
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import CameraInfo, CompressedImage

    peer = Peer()
    for topic, msg_type in ((IMAGE, CompressedImage), (INFO, CameraInfo), (ODOM, Odometry)):
        peer.subscribe(topic, msg_type)
    yield peer
    peer.close()


def _recorded(bag, topics, seconds: float) -> dict[str, list[tuple[int, bytes, int]]]:
    """topic -> [(log time ns, CDR bytes, header stamp ns)] of the bag's first ``seconds``, in log-time order."""
    start = bag.reader.start_time
    recorded = {topic: [] for topic in topics}
    for connection, time_ns, raw in bag.raw_messages([c for t in topics for c in bag.connections(t)], start,
                                                     start + round(seconds * 1e9)):
        header = bag.deserialize(connection, time_ns, raw).header
        recorded[connection.topic].append((time_ns, bag.cdr(connection, raw),
                                           header.stamp.sec * 1_000_000_000 + header.stamp.nanosec))
    return recorded


def _stamp_ns(bag, topic: str, data: bytes) -> int:
    stamp = bag.ros2_typestore.deserialize_cdr(data, TYPES[topic]).header.stamp
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def test_plays_the_recorded_messages_with_their_stamps_in_order_at_the_recorded_pace(bag, peer):
    rate, seconds = 4.0, 2.0
    expected = _recorded(bag, TYPES, seconds)
    assert all(len(messages) == 60 for messages in expected.values())  # 30 Hz
    summary = peer.player(bag, rate=rate, duration=seconds).play()
    peer.wait_until(lambda: all(len(peer.received[t]) >= len(expected[t]) for t in TYPES), "every message")
    time.sleep(0.2)  # nothing more may come
    for topic, messages in expected.items():
        received = peer.received[topic]
        assert [data for _, data in received] == [data for _, data, _ in messages], topic  # bytes, order, no extra
        assert [_stamp_ns(bag, topic, data) for _, data in received] == [stamp for _, _, stamp in messages]
        assert summary.messages[topic] == len(messages)
    assert set(summary.messages) == set(TYPES) | {"/camera/depth/image_raw/compressedDepth"}
    assert set(summary.skipped) == {"/tf", "/tf_static"} and summary.loops == 1  # tf2_msgs: no pip wheel
    images = expected[IMAGE]
    expected_wall = (images[-1][0] - images[0][0]) / 1e9 / rate
    arrivals = [arrived for arrived, _ in peer.received[IMAGE]]
    assert 0.5 * expected_wall < arrivals[-1] - arrivals[0] < 2.0 * expected_wall
    assert 0.5 * expected_wall < summary.wall_time < 2.0 * expected_wall + 0.5  # + reading the first chunk
    # spacing follows the recorded one: the first half of the window takes about half the time
    middle = arrivals[len(arrivals) // 2] - arrivals[0]
    assert 0.25 * expected_wall < middle < 0.75 * expected_wall + 0.1


def test_topics_select_and_remap_renames(bag, peer):
    from nav_msgs.msg import Odometry

    peer.subscribe("/odom_played", Odometry)
    expected = _recorded(bag, [ODOM], 0.5)[ODOM]
    summary = peer.player(bag, rate=4.0, duration=0.5, topics=[ODOM], remap=parse_remap(["/odom:=/odom_played"])
                          ).play()
    peer.wait_until(lambda: len(peer.received["/odom_played"]) >= len(expected), "the remapped odometry")
    time.sleep(0.3)
    assert [data for _, data in peer.received["/odom_played"]] == [data for _, data, _ in expected]
    assert summary.messages == {"/odom_played": len(expected)}
    assert all(not peer.received[topic] for topic in TYPES), "a topic that was not selected was played"


def test_rewrite_replaces_what_is_published(bag, peer):
    from nav_msgs.msg import Odometry
    from rclpy.serialization import deserialize_message

    expected = _recorded(bag, [ODOM], 0.3)[ODOM]
    seen = []

    def scaled(topic, elapsed, data):  # odometry 10x too far, as a message object
        seen.append((topic, elapsed))
        msg = deserialize_message(data, Odometry)
        msg.pose.pose.position.x *= 10.0
        return msg

    peer.player(bag, rate=2.0, duration=0.3, topics=[ODOM], rewrite=scaled).play()
    peer.wait_until(lambda: len(peer.received[ODOM]) >= len(expected), "the rewritten odometry")
    played = [deserialize_message(data, Odometry) for _, data in peer.received[ODOM]]
    recorded = [deserialize_message(data, Odometry) for _, data, _ in expected]
    assert [m.pose.pose.position.x for m in played] == pytest.approx([10 * m.pose.pose.position.x for m in recorded])
    assert [m.header.stamp for m in played] == [m.header.stamp for m in recorded]
    assert [topic for topic, _ in seen] == [ODOM] * len(expected)
    elapsed = [t for _, t in seen]
    assert elapsed == sorted(elapsed) and 0 <= elapsed[0] < elapsed[-1] < 5.0


def test_clock_follows_the_bag_time(bag, peer):
    from rclpy.serialization import deserialize_message
    from rosgraph_msgs.msg import Clock

    peer.subscribe("/clock", Clock)
    expected = _recorded(bag, [ODOM], 0.3)[ODOM]
    player = peer.player(bag, rate=2.0, start_offset=0.0, duration=0.3, topics=[ODOM], clock=True)
    assert player.wait_for_subscribers(TIMEOUT) and player._clock.get_subscription_count() > 0
    player.play()
    peer.wait_until(lambda: len(peer.received["/clock"]) >= len(expected), "the clock")
    clock = [deserialize_message(data, Clock).clock for _, data in peer.received["/clock"]]
    assert [t.sec * 1_000_000_000 + t.nanosec for t in clock] == [time_ns for time_ns, _, _ in expected]


def test_loop_repeats_the_window(bag, peer):
    expected = [data for _, data, _ in _recorded(bag, [ODOM], 0.2)[ODOM]]
    player = peer.player(bag, rate=2.0, duration=0.2, topics=[ODOM], loop=True)
    result = {}
    thread = threading.Thread(target=lambda: result.update(summary=player.play()))
    thread.start()
    try:
        peer.wait_until(lambda: len(peer.received[ODOM]) >= 2 * len(expected) + 1, "two loops and a bit")
    finally:
        player.stop()
        thread.join(TIMEOUT)
    assert not thread.is_alive()
    received = [data for _, data in peer.received[ODOM]]
    assert received[:2 * len(expected)] == expected * 2
    assert result["summary"].loops >= 3 and result["summary"].messages[ODOM] >= 2 * len(expected) + 1


def test_restamped_changes_the_header_stamp_only(bag):
    import struct

    for topic, messages in _recorded(bag, [IMAGE, INFO], 0.05).items():
        _, data, stamp = messages[0]
        assert header_stamp_ns(data) == stamp
        new = restamped(data, 1_800_000_000_123_456_789)
        msg, recorded = (bag.ros2_typestore.deserialize_cdr(d, TYPES[topic]) for d in (new, data))
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1_800_000_000, 123_456_789), topic
        assert header_stamp_ns(new) == 1_800_000_000_123_456_789 and new[12:] == data[12:] and new[:4] == data[:4]
        assert msg.header.frame_id == recorded.header.frame_id
    big_endian = b"\x00\x00\x00\x00" + struct.pack(">iI", 5, 7) + b"\x00" * 8
    assert header_stamp_ns(big_endian) == 5_000_000_007
    assert restamped(big_endian, 9_000_000_001)[4:12] == struct.pack(">iI", 9, 1)
    for junk in (b"\x00\x03" + bytes(14), b"\x00\x01\x00\x00\x01"):  # parameter-list CDR; too short
        with pytest.raises(ValueError, match="not a plain CDR message"):
            header_stamp_ns(junk)


def test_latched_topics_are_recognised(bag):
    latched = {c.topic for c in bag.reader.connections if is_latched(c)}
    assert latched == {"/tf_static"}  # recorded with transient-local offered QoS


def test_player_refuses_bad_options(bag, peer):
    for options in ({"rate": 0.0}, {"rate": -1.0}, {"start_offset": -1.0}, {"duration": 0.0}):
        with pytest.raises(ValueError):
            BagPlayer(bag, peer.player_node, **options)
    with pytest.raises(ValueError, match="no topic '/nope'.*the bag's topics"):
        BagPlayer(bag, peer.player_node, topics=["/nope"])
    with pytest.raises(ValueError, match="bad remap rule"):
        parse_remap(["/odom=/x"])


def _play_bag(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "depth_ros.tools.play_bag", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ), **kwargs)


def test_truncated_bag_is_one_line(shared_data, tmp_path):
    source = next((shared_data / BAG).glob("*.mcap"))
    truncated = tmp_path / "truncated.mcap"
    with open(source, "rb") as file:
        truncated.write_bytes(file.read(source.stat().st_size // 2))
    _, stderr = (process := _play_bag(str(truncated), "--delay", "0")).communicate(timeout=TIMEOUT)
    assert process.returncode == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"play_bag: error: {truncated}: cannot"), stderr


def test_missing_bag_and_zero_rate_are_refused(shared_data, tmp_path):
    _, stderr = (process := _play_bag(str(tmp_path / "missing"))).communicate(timeout=TIMEOUT)
    assert process.returncode == 1 and stderr.strip() == f"play_bag: error: {tmp_path / 'missing'}: no such bag"
    _, stderr = (process := _play_bag(str(shared_data / BAG), "--rate", "0")).communicate(timeout=TIMEOUT)
    assert process.returncode == 2 and stderr.strip().splitlines()[-1] == "play_bag: error: --rate must be > 0, got 0.0"


def _play_until_received(peer, topic: str, *args: str) -> tuple[int, str]:
    """Run play_bag with ``args`` until ``peer`` has two messages on ``topic``, then Ctrl-C it: (exit status,
    stderr)."""
    process = _play_bag(*args, start_new_session=True)
    try:
        peer.wait_until(lambda: len(peer.received[topic]) >= 2, f"{topic} from play_bag")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stderr


def test_cli_remap_renames_without_an_rcl_deprecation_warning(shared_data, peer):
    """``--remap OLD:=NEW`` is play_bag's own option: the odometry arrives under the new name, and rcl never sees the
    rule (it warned 'This syntax is deprecated' on every start when it did)."""
    from nav_msgs.msg import Odometry

    peer.subscribe("/odom_cli", Odometry)
    status, stderr = _play_until_received(peer, "/odom_cli", str(shared_data / BAG), "--loop", "--topics", ODOM,
                                          "--remap", f"{ODOM}:=/odom_cli")
    assert status == 130 and "deprecated" not in stderr, stderr


def test_ctrl_c_stops_cleanly(shared_data, peer):
    status, stderr = _play_until_received(peer, ODOM, str(shared_data / BAG), "--loop", "--topics", ODOM,
                                          "--rate", "0.5")
    assert status == 130, stderr
    assert "Traceback" not in stderr


def test_an_empty_window_is_not_looped(bag, peer):
    summary = BagPlayer(bag, peer.player_node, start_offset=60.0, loop=True, topics=[ODOM]).play()  # bag: 20 s
    assert summary.loops == 1 and summary.messages == {}
