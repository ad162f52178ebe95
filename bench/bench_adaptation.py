#!/usr/bin/env python3
"""Online adaptation end to end: play_bag -> depth_node + adaptation_node over localhost ROS 2, in one run.

Plays a window of a bag (default frames 300-599 of the 7-Scenes odom bag: 10 s from 10 s on) in a loop in real
time into depth_node and adaptation_node (both in their own processes, one namespace), first for ``--baseline`` s
with depth_node alone, then with adaptation running for ``--minutes``. Printed and written to ``--out``/result.json:
depth_node's processed rate without and with adaptation (ratio), adaptation updates per second, publishes,
hand-overs, rollbacks and rejections from /diagnostics, and the memory (RSS) of both node processes sampled every
10 s (first and last sample, peak). The last published ``latest.pth`` is then what ``training/evaluate.py`` scores.

With ``--faults``, three faults are injected into the played stream during the adaptation phase, at 20 %, 40 % and
60 % of it (:data:`FAULTS`): odometry positions and velocities scaled by 10 for 5 s, 10 s of identical images (a
frozen driver: the first image of the fault repeated with fresh stamps) and 2 s of black images. The result lists,
per fault, the adaptation_node counters that changed between just before the fault and 20 s after it, and every
publish of the run with its held-out loss against the weights it replaced (from the node's log).

    python bench/bench_adaptation.py --checkpoint ../runs/scaled_1.3/best.pth --minutes 10 --out ../runs/adapt
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BAG = REPO.parent / "shared" / "data" / "7scenes_redkitchen_odom" / "bag"
NAMESPACE = "/camera"
TOPICS = {"/camera/color/image_raw/compressed": f"{NAMESPACE}/image/compressed",
          "/camera/color/camera_info": f"{NAMESPACE}/camera_info", "/odom": f"{NAMESPACE}/odom",
          # the bag's depth, only for adaptation_node's live AbsRel of the published model (never trained on)
          "/camera/depth/image_raw/compressedDepth": f"{NAMESPACE}/reference_depth/compressedDepth"}
# base_link -> camera_optical_frame of the bag's /tf_static (tf2_msgs has no pip wheel, so it is given here)
CAMERA_TO_BASE = [0.10, 0.0, 0.50, -1.5707963267948966, 0.0, -1.5707963267948966]


# name -> (start as a fraction of the adaptation phase, seconds)
FAULTS = {"odometry x10": (0.2, 5.0), "identical frames": (0.4, 10.0), "black frames": (0.6, 2.0)}
FAULT_REPORT_AFTER = 20.0  # s after a fault's end when its counters are read
PUBLISHED = re.compile(r"published .* \(held-out loss ([0-9.]+) < ([0-9.]+) of the replaced weights, scale ratio "
                       r"([0-9.]+), was ([0-9.]+)\)")


class FaultInjector:
    """A ``BagPlayer`` rewrite hook that injects :data:`FAULTS` once ``arm(start)`` gave the adaptation phase.

    Args:
        phase_seconds: length of the adaptation phase in s.
        image_topic, odom_topic: bag topics (CompressedImage, Odometry).
    """

    def __init__(self, phase_seconds: float, image_topic: str, odom_topic: str):
        self.windows = {name: (fraction * phase_seconds, fraction * phase_seconds + length)
                        for name, (fraction, length) in FAULTS.items()}
        self.image_topic, self.odom_topic = image_topic, odom_topic
        self.start: float | None = None  # play time (s since play() started) of the adaptation phase
        self._frozen: bytes | None = None
        self._black: dict[str, bytes] = {}

    def arm(self, play_time: float) -> None:
        self.start = play_time

    def active(self, play_time: float) -> str | None:
        if self.start is None:
            return None
        t = play_time - self.start
        return next((name for name, (begin, end) in self.windows.items() if begin <= t < end), None)

    def __call__(self, topic: str, play_time: float, data: bytes):
        from nav_msgs.msg import Odometry
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import CompressedImage

        fault = self.active(play_time)
        if fault != "identical frames":
            self._frozen = None
        if fault == "odometry x10" and topic == self.odom_topic:
            msg = deserialize_message(data, Odometry)
            for vector in (msg.pose.pose.position, msg.twist.twist.linear):
                vector.x, vector.y, vector.z = 10 * vector.x, 10 * vector.y, 10 * vector.z
            return msg
        if fault in ("identical frames", "black frames") and topic == self.image_topic:
            msg = deserialize_message(data, CompressedImage)
            if fault == "identical frames":
                self._frozen = self._frozen or bytes(msg.data)
                msg.data = self._frozen
            else:
                msg.data = self._black_jpeg(bytes(msg.data))
            return msg
        return data

    def _black_jpeg(self, jpeg: bytes) -> bytes:
        import cv2
        import numpy as np

        shape = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape
        if shape not in self._black:
            self._black[shape] = cv2.imencode(".jpg", np.zeros(shape, np.uint8))[1].tobytes()
        return self._black[shape]


def with_focal_length(data: bytes, fx: float):
    """A CameraInfo (CDR bytes) with fx = fy = ``fx`` px in K and P (principal point and the rest unchanged)."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo

    msg = deserialize_message(data, CameraInfo)
    k, p = list(msg.k), list(msg.p)
    k[0] = k[4] = p[0] = p[5] = fx
    msg.k, msg.p = k, p
    return msg


def _counter_changes(before: dict[str, str], after: dict[str, str]) -> dict[str, float]:
    """Numeric diagnostics values that changed: key -> after - before."""
    changes = {}
    for key, value in after.items():
        try:
            delta = float(value) - float(before.get(key, 0))
        except ValueError:
            continue
        if delta and not any(word in key for word in ("loss", "ratio", "per second", "AbsRel")):
            changes[key] = delta
    return changes


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="starting checkpoint of both nodes (default: random ViT-S weights, for "
                                               "rates and memory only)")
    parser.add_argument("--bag", type=Path, default=BAG)
    parser.add_argument("--start-offset", type=float, default=10.0, help="s into the bag (10 s = frame 300)")
    parser.add_argument("--duration", type=float, default=10.0, help="s of bag played in a loop")
    parser.add_argument("--baseline", type=float, default=30.0, help="s of depth_node alone first")
    parser.add_argument("--minutes", type=float, default=2.0, help="minutes with adaptation running")
    parser.add_argument("--out", type=Path, default=REPO.parent / "runs" / "bench_adaptation")
    parser.add_argument("--adaptation-param", action="append", default=[], metavar="NAME:=VALUE",
                        help="extra adaptation_node parameter")
    parser.add_argument("--faults", action="store_true", help="inject the faults of FAULTS during adaptation")
    parser.add_argument("--camera-fx", type=float, help="replace the focal length (fx = fy, px) of every CameraInfo "
                        "played: an intrinsics experiment (7-Scenes' CameraInfo holds the depth camera's 585 px)")
    return parser.parse_args()


class Bench:
    """One run: the bag player and a diagnostics listener in this process, the two nodes in theirs.

    Call :meth:`run` once; it returns the result dictionary (also written to ``<out>/result.json``).
    """

    def __init__(self, args: argparse.Namespace):
        from depth_ros.testing import NodeProcess, random_checkpoint

        self.args = args
        args.out.mkdir(parents=True, exist_ok=True)
        self.checkpoint = str(Path(args.checkpoint).resolve()) if args.checkpoint else str(
            random_checkpoint(args.out / "random_vits.pth", input_size=126, max_depth=10.0))
        self.depth_node = NodeProcess({"checkpoint": self.checkpoint, "use_compressed": True,
                                       "camera_to_base": CAMERA_TO_BASE, "diagnostics_period": 5.0},
                                      args.out / "depth_node.log", NAMESPACE)
        self.adaptation = None
        self.diagnostics: dict[str, dict[str, str]] = {}
        self.memory: list[dict[str, float]] = []
        self.fault_reports: dict[str, dict] = {}
        image_topic, info_topic, odom_topic = list(TOPICS)[:3]
        self.info_topic = info_topic
        self.faults = FaultInjector(args.minutes * 60, image_topic, odom_topic) if args.faults else None
        self.started = time.monotonic()

    def status(self, name: str) -> dict[str, str]:
        """The latest /diagnostics values of the status whose name contains ``name``."""
        return dict(next((v for k, v in self.diagnostics.items() if name in k), {}))

    def rewrite(self, topic: str, play_time: float, data: bytes):
        if self.args.camera_fx is not None and topic == self.info_topic:
            return with_focal_length(data, self.args.camera_fx)
        return self.faults(topic, play_time, data) if self.faults is not None else data

    def sample(self, phase: str, seconds: float) -> list[float]:
        """depth_node's processed rate and both nodes' RSS every 10 s for ``seconds``."""
        rates = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(min(10.0, max(0.0, end - time.monotonic())))
            self.depth_node.check_running()
            row = {"t": round(time.monotonic() - self.started, 1), "phase": phase,
                   "depth_node_mb": _rss_mb(self.depth_node.process.pid)}
            if self.adaptation is not None:
                self.adaptation.check_running()
                row["adaptation_node_mb"] = _rss_mb(self.adaptation.process.pid)
            self.memory.append(row)
            rates.append(float(self.status("depth pipeline").get("processed rate (Hz)", "nan")))
            print(json.dumps(row | {"depth_rate_hz": rates[-1]}), flush=True)
        return rates

    def watch_faults(self, phase_start: float) -> None:
        for name, (begin, end) in self.faults.windows.items():
            time.sleep(max(0.0, phase_start + begin - 1.0 - time.monotonic()))
            before = self.status("online adaptation")
            time.sleep(max(0.0, phase_start + end + FAULT_REPORT_AFTER - time.monotonic()))
            self.fault_reports[name] = {"start_s": begin, "end_s": end,
                                        "changes": _counter_changes(before, self.status("online adaptation"))}
            print(json.dumps({"fault": name} | self.fault_reports[name]), flush=True)

    def start_adaptation(self) -> None:
        from depth_ros.testing import NodeProcess

        params = {"checkpoint": self.checkpoint, "output_dir": str(self.args.out / "adapted"),
                  "use_compressed": True, "depth_node_name": f"{NAMESPACE}/depth_node",
                  "camera_to_base": CAMERA_TO_BASE, "use_reference_depth": True,
                  "reference_transport": "compressedDepth"}
        for item in self.args.adaptation_param:
            name, value = item.split(":=", 1)
            params[name] = yaml.safe_load(value)
        self.adaptation = NodeProcess(params, self.args.out / "adaptation_node.log", NAMESPACE,
                                      executable="adaptation_node")
        if self.faults is not None:
            phase_start = time.monotonic()
            self.faults.arm(phase_start - self.started)
            threading.Thread(target=self.watch_faults, args=(phase_start,), daemon=True).start()

    def run(self) -> dict:
        from depth_ros.data.rosbag import BagReader
        from depth_ros.testing import RosPeer
        from depth_ros.tools.play_bag import BagPlayer

        with RosPeer("bench_adaptation") as peer, BagReader(self.args.bag) as bag:
            from diagnostic_msgs.msg import DiagnosticArray
            from sensor_msgs.msg import Image

            peer.node.create_subscription(Image, f"{NAMESPACE}/depth", lambda msg: None, 2)  # depth_node computes
            peer.node.create_subscription(DiagnosticArray, "/diagnostics", lambda msg: self.diagnostics.update(
                {s.name: {kv.key: kv.value for kv in s.values} for s in msg.status}), 10)
            player = BagPlayer(bag, peer.node, start_offset=self.args.start_offset, duration=self.args.duration,
                               loop=True, topics=list(TOPICS), remap=TOPICS, rewrite=self.rewrite)
            playing = threading.Thread(target=player.play, daemon=True)
            try:
                player.wait_for_subscribers(60.0)
                self.started = time.monotonic()
                playing.start()
                alone = self.sample("depth_node alone", self.args.baseline)
                self.start_adaptation()
                together = self.sample("with adaptation", self.args.minutes * 60)
            finally:
                player.stop()
                playing.join(timeout=10)
                codes = [p.stop() for p in (self.depth_node, self.adaptation) if p is not None]
        return self.result(alone, together, codes)

    def result(self, alone: list[float], together: list[float], codes: list[int]) -> dict:
        rate_alone, rate_together = _mean(alone[1:]), _mean(together[1:])
        result = {
            "depth_rate_alone_hz": rate_alone, "depth_rate_with_adaptation_hz": rate_together,
            "rate_ratio": rate_together / rate_alone if rate_alone else float("nan"),
            "adaptation": self.status("online adaptation"), "memory": self.memory, "exit_codes": codes,
            "faults": self.fault_reports,
            "publishes": [dict(zip(("held_out_loss", "replaced_loss", "scale_ratio", "replaced_scale_ratio"),
                                   map(float, match.groups()), strict=True))
                          for match in PUBLISHED.finditer((self.args.out / "adaptation_node.log").read_text())],
            "memory_mb": {name: {"first": rows[0], "last": rows[-1], "peak": max(rows)} for name in
                          ("depth_node_mb", "adaptation_node_mb")
                          if (rows := [m[name] for m in self.memory if name in m])},
        }
        (self.args.out / "result.json").write_text(json.dumps(result, indent=2))
        return result


def _mean(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return sum(values) / len(values) if values else float("nan")


def main() -> int:
    args = parse_args()
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # before rclpy starts, here or in the nodes
    os.environ.setdefault("ROS_DOMAIN_ID", "44")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from depth_ros.ros.dds import use_shipped_fastdds_profile

    use_shipped_fastdds_profile()
    result = Bench(args).run()
    print(json.dumps({k: v for k, v in result.items() if k != "memory"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
