"""``noisy_odometry``: a copy of a bag whose odometry has the errors of a cheap wheel base.

Wheel odometry measures the distance travelled well and the heading poorly. This tool makes that reproducible: every
odometry increment (the motion between two consecutive samples, in the body frame) gets

- its translation scaled by ``1 + translation_error`` (e.g. 0.03: wheels 3 % larger than configured), and
- a yaw-rate error ``b(t)`` in deg/s added to its rotation about the body's up axis (REP 103 ``z`` of
  ``base_link``), where ``b`` wanders as a random walk that stays bounded (an Ornstein-Uhlenbeck process of standard
  deviation ``yaw_rate_error`` deg/s and correlation time ``correlation_time`` s; seeded, so a run is repeatable),

and the noisy trajectory is integrated from the first pose. In the bag, ``/odom`` (nav_msgs/Odometry) gets the noisy
pose, its twist the scaled linear and the biased angular z velocity; ``/tf`` transforms from the odometry's frame to
its child (``odom -> base_link``) get the same correction as the ``/odom`` sample nearest in stamp (identical when, as
usual, a driver stamps both alike). Every other message is copied unchanged, with its log time. The output is a
rosbag2 (MCAP) written under a temporary name and renamed when complete.

:func:`perturb_trajectory` is the one implementation of the perturbation; the benchmarks apply it to recorded poses.

Example::

    noisy_odometry recording/ noisy/ --translation-error 0.03 --yaw-rate-error 2 --seed 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from depth_ros.files import staged_folder
from depth_ros.geometry.transform import pose_msg_to_matrix, relative_pose, translation_quaternion
from depth_ros.tools.cli import run_cli

ODOMETRY = "nav_msgs/msg/Odometry"
CORRELATION_TIME = 10.0
"""Seconds over which the yaw-rate error of :func:`perturb_trajectory` wanders (its correlation time)."""


def perturb_trajectory(stamps, poses, translation_error: float = 0.0, yaw_rate_error: float = 0.0, seed: int = 0,
                       up_axis=(0.0, 0.0, 1.0), correlation_time: float = CORRELATION_TIME) -> np.ndarray:
    """Odometry with a translation-scale error and a wandering yaw-rate error (see the module docstring).

    Args:
        stamps: (N,) seconds, increasing.
        poses: (N, 4, 4) ``T_odom_body`` (body pose in the odometry frame), metres.
        translation_error: relative error of every translation increment (0.03: 3 % too long).
        yaw_rate_error: standard deviation in deg/s of the yaw-rate error (0: none).
        seed: seed of the error's random walk.
        up_axis: the body's up axis the yaw turns about, in body coordinates (REP 103 ``base_link``: z; a camera
            optical frame: (0, -1, 0)).
        correlation_time: seconds over which the yaw-rate error wanders.

    Returns:
        (N, 4, 4) float64 noisy ``T_odom_body``, equal to ``poses[0]`` at the first sample.

    Raises:
        ValueError: fewer than one pose, shapes that do not match, or stamps that do not increase.
    """
    return _perturb(stamps, poses, translation_error, yaw_rate_error, seed, up_axis, correlation_time)[0]


def _perturb(stamps, poses, translation_error, yaw_rate_error, seed, up_axis=(0.0, 0.0, 1.0),
             correlation_time=CORRELATION_TIME) -> tuple[np.ndarray, np.ndarray]:
    """:func:`perturb_trajectory`'s poses and the yaw-rate error (rad/s) of each sample (0 at the first)."""
    stamps, poses = np.asarray(stamps, dtype=np.float64), np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4) or len(poses) != len(stamps) or len(poses) == 0:
        raise ValueError(f"need N stamps and (N, 4, 4) poses, got {stamps.shape} and {poses.shape}")
    steps = np.diff(stamps)
    if (steps <= 0).any():
        raise ValueError("odometry stamps must increase")
    axis = np.asarray(up_axis, dtype=np.float64) / np.linalg.norm(up_axis)
    rates = _wandering_rate(steps, np.radians(yaw_rate_error), correlation_time, np.random.default_rng(seed))
    increments = relative_pose(poses[:-1], poses[1:])  # T_previous_next, body frame
    noisy = [poses[0]]
    for increment, rate, step in zip(increments, rates, steps, strict=True):
        perturbed = increment.copy()
        perturbed[:3, :3] = increment[:3, :3] @ Rotation.from_rotvec(axis * rate * step).as_matrix()
        perturbed[:3, 3] *= 1.0 + translation_error
        noisy.append(noisy[-1] @ perturbed)
    return np.stack(noisy), np.r_[0.0, rates]


def _wandering_rate(steps: np.ndarray, sigma: float, correlation_time: float, rng) -> np.ndarray:
    """Ornstein-Uhlenbeck samples (rad/s) of standard deviation ``sigma`` at the given time steps."""
    rates = np.zeros(len(steps))
    if sigma == 0:
        return rates
    rate = rng.normal(0.0, sigma)
    for i, step in enumerate(steps):
        decay = np.exp(-step / correlation_time)
        rate = rate * decay + sigma * np.sqrt(1.0 - decay ** 2) * rng.normal()
        rates[i] = rate
    return rates


def noisy_odometry(input_bag: str | Path, output_bag: str | Path, translation_error: float = 0.0,
                   yaw_rate_error: float = 0.0, seed: int = 0, odom_topic: str = "/odom") -> int:
    """Copy ``input_bag`` to ``output_bag`` (rosbag2, MCAP) with noisy odometry; returns the odometry count.

    Raises:
        FileExistsError: the output exists.
        ValueError: no ``odom_topic`` of type nav_msgs/Odometry, or stamps that do not increase.
        BagError: the bag cannot be read. Nothing is left at ``output_bag`` on any error.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    from depth_ros.data.rosbag import BagReader
    from depth_ros.ros.conversions import stamp_ns

    with BagReader(input_bag) as bag:
        if not bag.reader.is2:
            raise ValueError(f"{bag.path}: a ROS 1 bag; convert it to ROS 2 first (rosbags-convert)")
        odometry = [msg for _, _, msg in bag.topic_messages(odom_topic, (ODOMETRY,))]
        stamps = np.array([stamp_ns(msg.header) for msg in odometry]) * 1e-9
        poses = np.stack([pose_msg_to_matrix(msg) for msg in odometry])
        noisy, rates = _perturb(stamps, poses, translation_error, yaw_rate_error, seed)
        corrections = noisy @ np.linalg.inv(poses)  # T_noisyodom_odom at each sample
        frames = (odometry[0].header.frame_id, odometry[0].child_frame_id)
        typestore, index = bag.ros2_typestore, iter(range(len(odometry)))
        with staged_folder(output_bag) as staging, Writer(staging, version=8,
                                                          storage_plugin=StoragePlugin.MCAP) as writer:
            outputs = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=typestore,
                                                   offered_qos_profiles=getattr(c.ext, "offered_qos_profiles", ()))
                       for c in bag.reader.connections}
            for connection, time_ns, raw in bag.raw_messages():
                if connection.topic == odom_topic:
                    i = next(index)
                    msg = _noisy_odometry_msg(odometry[i], noisy[i], translation_error, rates[i])
                    data = typestore.serialize_cdr(msg, connection.msgtype)
                elif connection.topic == "/tf":
                    msg = bag.deserialize(connection, time_ns, raw)
                    _correct_tf(msg, frames, stamps, corrections)
                    data = typestore.serialize_cdr(msg, connection.msgtype)
                else:
                    data = bag.cdr(connection, raw)
                writer.write(outputs[connection.id], time_ns, data)
    return len(odometry)


def _set_pose(pose, matrix: np.ndarray) -> None:
    """Write ``matrix`` into a geometry_msgs/Pose (position/orientation) or Transform (translation/rotation)."""
    translation, quaternion = translation_quaternion(matrix)
    point = pose.position if hasattr(pose, "position") else pose.translation
    rotation = pose.orientation if hasattr(pose, "orientation") else pose.rotation
    point.x, point.y, point.z = (float(v) for v in translation)
    rotation.x, rotation.y, rotation.z, rotation.w = (float(v) for v in quaternion)


def _noisy_odometry_msg(msg, pose: np.ndarray, translation_error: float, yaw_rate: float):
    """The Odometry message with the noisy pose, linear twist x (1 + error) and angular z + the yaw-rate error."""
    _set_pose(msg.pose.pose, pose)
    linear, angular = msg.twist.twist.linear, msg.twist.twist.angular
    linear.x, linear.y, linear.z = (v * (1.0 + translation_error) for v in (linear.x, linear.y, linear.z))
    angular.z += float(yaw_rate)
    return msg


def _correct_tf(msg, frames: tuple[str, str], stamps: np.ndarray, corrections: np.ndarray) -> None:
    """Apply the nearest odometry sample's correction to the odometry's transforms in a TFMessage (in place)."""
    from depth_ros.ros.conversions import stamp_ns

    for transform in msg.transforms:
        if (transform.header.frame_id, transform.child_frame_id) != frames:
            continue
        stamp = stamp_ns(transform.header) * 1e-9
        nearest = int(np.clip(np.searchsorted(stamps, stamp), 1, len(stamps) - 1)) if len(stamps) > 1 else 0
        if nearest and abs(stamps[nearest - 1] - stamp) <= abs(stamps[nearest] - stamp):
            nearest -= 1
        _set_pose(transform.transform, corrections[nearest] @ pose_msg_to_matrix(transform))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="noisy_odometry", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="input rosbag2 (folder, .mcap or .db3)")
    parser.add_argument("output", type=Path, help="output rosbag2 folder (MCAP) to create")
    parser.add_argument("--translation-error", type=float, default=0.0,
                        help="relative error of every translation increment, e.g. 0.03 (default: %(default)s)")
    parser.add_argument("--yaw-rate-error", type=float, default=0.0,
                        help="standard deviation of the wandering yaw-rate error, deg/s (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the yaw-rate error (default: %(default)s)")
    parser.add_argument("--odom-topic", default="/odom", help="nav_msgs/Odometry topic (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``noisy_odometry``: 0 on success, 1 with one ``noisy_odometry: error: ...`` line."""
    args = parse_args(argv)

    def run() -> None:
        import logging

        count = noisy_odometry(args.input, args.output, args.translation_error, args.yaw_rate_error, args.seed,
                               args.odom_topic)
        logging.getLogger(__name__).info("%s: %d odometry messages perturbed, everything else copied", args.output,
                                         count)

    return run_cli("noisy_odometry", run)


if __name__ == "__main__":
    sys.exit(main())
