"""depth_node's pipeline at 640x480: per-stage times, non-inference overhead, and end-to-end latency through DDS.

Part 1, in this process, the node's code path for one frame (medians over ``--runs``): deserialising the incoming
Image (CDR), decoding it to RGB, then :class:`DepthPipeline` stages (preprocess, inference, postprocess, cloud,
grid) and building + serialising the four output messages. Overhead = everything but inference, as a fraction of
the inference time (target: < 10 %).

Part 2, through DDS: the real ``depth_node`` in its own process (same model and parameters) fed by this process at
``--hz`` (30) Hz with Image + CameraInfo, best effort, for ``--seconds``; latency = receipt of ``depth`` here minus
publication of its image here. Median and p90 over the first and the last third of the answered frames: with the
newest-frame-wins queue the latency must not grow (ratio last / first about 1).

Model: vits metric at 518 px with the node's default precision; random weights (latency does not depend on them).
Input: the Middlebury Motorcycle image resized to 640x480. Runs with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and
ROS_DOMAIN_ID 43 unless one is set.

    nice python bench/bench_pipeline.py [--runs 10] [--seconds 40] [--hz 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

STAGES = ("deserialise input", "decode", "preprocess", "inference", "postprocess", "cloud", "grid",
          "serialise outputs")


def benchmark_stages(pipeline, frame, config, runs: int, warmup: int) -> dict[str, float]:
    """Median seconds per stage of :data:`STAGES` for one 640x480 frame, over ``runs`` runs after ``warmup``."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from depth_ros.geometry.transform import pose_matrix
    from depth_ros.ros.conversions import image_to_rgb, rgb_to_image_msg
    from depth_ros.ros.outputs import output_messages

    header = Header(frame_id=frame.frame_id)
    header.stamp.sec = 1
    incoming = serialize_message(rgb_to_image_msg(frame.rgb, header))
    pose = pose_matrix(config.camera_to_base)
    samples = {stage: [] for stage in STAGES}
    for run in range(warmup + runs):
        start = time.perf_counter()
        msg = deserialize_message(incoming, Image)
        received = time.perf_counter()
        rgb = image_to_rgb(msg)
        decoded = time.perf_counter()
        out = pipeline.run(rgb, frame.camera, pose)
        processed = time.perf_counter()
        for message in output_messages(out, msg.header, config.grid_frame, pipeline.grid_options.spec).values():
            serialize_message(message)
        serialised = time.perf_counter()
        if run < warmup:
            continue
        times = {"deserialise input": received - start, "decode": decoded - received, **out.timings,
                 "serialise outputs": serialised - processed}
        for stage in STAGES:
            samples[stage].append(times[stage])
    return {stage: statistics.median(values) for stage, values in samples.items()}


def camera_frame():
    """The Motorcycle image resized to 640x480 (a 4:3 camera) as a :class:`depth_ros.frame.Frame` without depth."""
    import cv2

    from depth_ros.frame import Frame
    from depth_ros.tools.demo import motorcycle_frame

    motorcycle = motorcycle_frame()
    return Frame(cv2.resize(motorcycle.rgb, (640, 480), interpolation=cv2.INTER_AREA),
                 motorcycle.camera.resized(640, 480), 0, motorcycle.frame_id)


def _summary(latencies: list[float]) -> str:
    values = np.asarray(latencies) * 1000
    return f"median {np.median(values):7.0f} ms, p90 {np.percentile(values, 90):7.0f} ms (n={values.size})"


def benchmark_dds(frame, checkpoint: Path, seconds: float, hz: float, log_path: Path) -> None:
    """Feed the node process at ``hz`` for ``seconds`` and print latency of the first and last thirds."""
    from std_msgs.msg import Header

    from depth_ros.ros.conversions import camera_info_msg, rgb_to_image_msg
    from depth_ros.testing import NodeHarness

    with NodeHarness({"checkpoint": str(checkpoint)}, log_path, "/bench_pipeline", timeout=300, keep=2) as harness:
        start = time.monotonic()
        next_time = start
        while next_time - start < seconds:
            harness.check_running()
            header = Header(frame_id=frame.frame_id, stamp=harness.now())
            harness.send(rgb_to_image_msg(frame.rgb, header), camera_info_msg(frame.camera, header),
                         stamp=header.stamp, settle=0.0)
            next_time += 1.0 / hz
            time.sleep(max(0.0, next_time - time.monotonic()))
        sent = dict(harness.sent)
        last = max(sent)
        harness.wait_until(lambda: last in harness.arrived["depth"], "the depth of the last frame", 60)
        harness.wait_until(lambda: int(harness.diagnostic_values().get("processed frames", 0))
                           >= len(harness.arrived["depth"]), "the node's diagnostics", 10)
        answered = sorted((stamp, received - sent[stamp]) for stamp, received in harness.arrived["depth"].items())
        diagnostics = harness.diagnostic_values()
    latencies = [latency for _, latency in answered]
    third = max(1, len(latencies) // 3)
    first, final = latencies[:third], latencies[-third:]
    print(f"\nDDS end to end ({hz:.0f} Hz input for {seconds:.0f} s, {len(sent)} frames sent, {len(answered)} "
          f"answered, node dropped {diagnostics.get('dropped frames', '?')}):")
    print(f"  first third: {_summary(first)}")
    print(f"  last third:  {_summary(final)}")
    print(f"  latency growth, last / first third median: {np.median(final) / np.median(first):.2f}x "
          "(target: about 1, no growth)")
    print(f"  processed rate {len(answered) / seconds:.2f} Hz; node diagnostics (last period): "
          + ", ".join(f"{key} {value}" for key, value in diagnostics.items() if "(ms)" in key))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs of the stage benchmark")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=40.0, help="duration of the DDS run")
    parser.add_argument("--hz", type=float, default=30.0, help="camera rate of the DDS run")
    parser.add_argument("--no-dds", action="store_true", help="skip the DDS run")
    args = parser.parse_args()

    # before rclpy starts, here or in the node process (which inherits the environment)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", "43")
    import torch

    from depth_ros.pipeline import DepthPipeline
    from depth_ros.ros.dds import use_shipped_fastdds_profile
    from depth_ros.ros.params import NodeConfig
    from depth_ros.testing import random_checkpoint

    use_shipped_fastdds_profile()
    frame = camera_frame()
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as folder:
        checkpoint = random_checkpoint(Path(folder) / "random_vits.pth", input_size=518)
        config = NodeConfig.from_values({"checkpoint": str(checkpoint)})
        pipeline = DepthPipeline.from_config(config)
        estimator = pipeline.estimator
        load = os.getloadavg()
        print(f"vits metric, input {estimator.input_size} px -> network {estimator.network_size(480, 640)}, "
              f"{config.precision} on {estimator.device}, torch {torch.__version__} with {torch.get_num_threads()} "
              f"threads; 640x480 rgb8; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} "
              "CPUs")
        stages = benchmark_stages(pipeline, frame, config, args.runs, args.warmup)
        inference = stages["inference"]
        print(f"\nper stage, median of {args.runs} runs:")
        print(f"  {'stage':20s} {'ms':>9s} {'/ inference':>12s}")
        for stage, seconds in stages.items():
            print(f"  {stage:20s} {seconds * 1000:9.2f} {seconds / inference:11.1%}")
        overhead = sum(seconds for stage, seconds in stages.items() if stage != "inference")
        print(f"  non-inference overhead {overhead * 1000:.1f} ms = {overhead / inference:.1%} of inference "
              f"(target < 10 %)")
        del pipeline, estimator
        if not args.no_dds:
            benchmark_dds(frame, checkpoint, args.seconds, args.hz, Path(folder) / "node.log")


if __name__ == "__main__":
    main()
