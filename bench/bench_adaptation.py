#!/usr/bin/env python3
"""Online adaptation end to end: play_bag -> depth_node + adaptation_node over localhost ROS 2, in one run.

Plays a window of a bag (default frames 300-599 of the 7-Scenes odom bag: 10 s from 10 s on) in a loop in real
time into depth_node and adaptation_node (both in their own processes, one namespace), first for ``--baseline`` s
with depth_node alone, then with adaptation running for ``--minutes``. Printed and written to ``--out``/result.json:
depth_node's processed rate without and with adaptation (ratio), adaptation updates per second, publishes,
hand-overs, rollbacks and rejections from /diagnostics, and the memory (RSS) of both node processes sampled every
10 s (first and last sample, peak). The last published ``latest.pth`` is then what ``training/evaluate.py`` scores.

    python bench/bench_adaptation.py --checkpoint ../runs/scaled_1.3/best.pth --minutes 10 --out ../runs/adapt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BAG = REPO.parent / "shared" / "data" / "7scenes_redkitchen_odom" / "bag"
NAMESPACE = "/camera"
TOPICS = {"/camera/color/image_raw/compressed": f"{NAMESPACE}/image/compressed",
          "/camera/color/camera_info": f"{NAMESPACE}/camera_info", "/odom": f"{NAMESPACE}/odom"}
# base_link -> camera_optical_frame of the bag's /tf_static (tf2_msgs has no pip wheel, so it is given here)
CAMERA_TO_BASE = [0.10, 0.0, 0.50, -1.5707963267948966, 0.0, -1.5707963267948966]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
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
    args = parser.parse_args()

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # before rclpy starts, here or in the nodes
    os.environ.setdefault("ROS_DOMAIN_ID", "44")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from depth_ros.data.rosbag import BagReader
    from depth_ros.ros.dds import use_shipped_fastdds_profile
    from depth_ros.testing import NodeProcess, random_checkpoint
    from depth_ros.tools.play_bag import BagPlayer

    use_shipped_fastdds_profile()
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = str(Path(args.checkpoint).resolve()) if args.checkpoint else str(
        random_checkpoint(args.out / "random_vits.pth", input_size=126, max_depth=10.0))
    depth_node = NodeProcess({"checkpoint": checkpoint, "use_compressed": True, "camera_to_base": CAMERA_TO_BASE,
                              "diagnostics_period": 5.0}, args.out / "depth_node.log", NAMESPACE)
    rclpy.init()
    node = rclpy.create_node("bench_adaptation")
    diagnostics: dict[str, dict[str, str]] = {}
    node.create_subscription(Image, f"{NAMESPACE}/depth", lambda msg: None, 2)  # depth_node computes for us
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda msg: diagnostics.update(
        {s.name: {kv.key: kv.value for kv in s.values} for s in msg.status}), 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    bag = BagReader(args.bag)
    player = BagPlayer(bag, node, start_offset=args.start_offset, duration=args.duration, loop=True,
                       topics=list(TOPICS), remap=TOPICS)
    playing = threading.Thread(target=player.play, daemon=True)
    adaptation = None
    memory: list[dict[str, float]] = []

    def depth_rate() -> float:
        status = next((v for k, v in diagnostics.items() if "depth pipeline" in k), {})
        return float(status.get("processed rate (Hz)", "nan"))

    def sample(phase: str, seconds: float, rates: list[float]) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(10.0)
            depth_node.check_running()
            row = {"t": round(time.monotonic() - started, 1), "phase": phase,
                   "depth_node_mb": _rss_mb(depth_node.process.pid)}
            if adaptation is not None:
                adaptation.check_running()
                row["adaptation_node_mb"] = _rss_mb(adaptation.process.pid)
            memory.append(row)
            rates.append(depth_rate())
            print(json.dumps(row | {"depth_rate_hz": rates[-1]}), flush=True)

    try:
        player.wait_for_subscribers(60.0)
        started = time.monotonic()
        playing.start()
        alone: list[float] = []
        sample("depth_node alone", args.baseline, alone)
        params = {"checkpoint": checkpoint, "output_dir": str(args.out / "adapted"), "use_compressed": True,
                  "depth_node_name": f"{NAMESPACE}/depth_node", "camera_to_base": CAMERA_TO_BASE}
        for item in args.adaptation_param:
            name, value = item.split(":=", 1)
            params[name] = yaml.safe_load(value)
        adaptation = NodeProcess(params, args.out / "adaptation_node.log", NAMESPACE, executable="adaptation_node")
        together: list[float] = []
        sample("with adaptation", args.minutes * 60, together)
    finally:
        player.stop()
        playing.join(timeout=10)
        codes = [p.stop() for p in (depth_node, adaptation) if p is not None]
        executor.shutdown(timeout_sec=2.0)
        spinner.join(timeout=2.0)
        node.destroy_node()
        rclpy.try_shutdown()
        bag.close()
    adapt = next((v for k, v in diagnostics.items() if "online adaptation" in k), {})

    def mean(values):
        values = [v for v in values if v == v]
        return sum(values) / len(values) if values else float("nan")

    result = {
        "depth_rate_alone_hz": mean(alone[1:]), "depth_rate_with_adaptation_hz": mean(together[1:]),
        "rate_ratio": mean(together[1:]) / mean(alone[1:]) if mean(alone[1:]) else float("nan"),
        "adaptation": adapt, "memory": memory, "exit_codes": codes,
        "memory_mb": {name: {"first": rows[0], "last": rows[-1], "peak": max(rows)} for name in
                      ("depth_node_mb", "adaptation_node_mb")
                      if (rows := [m[name] for m in memory if name in m])},
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "memory"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
