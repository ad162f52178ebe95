"""Camera pose sources for posed image sequences (placeholder: TUM trajectories only, until the bag layer lands)."""

from __future__ import annotations

from pathlib import Path

from depth_ros.geometry.transform import PoseTrajectory


def load_camera_trajectory(path: Path, config, sequence) -> PoseTrajectory:
    """The camera optical frame's trajectory ``T_world_camera`` for the sequence at ``path``."""
    if config.kind != "tum":
        raise ValueError(f"pose source {config.kind!r} is not supported yet")
    file = Path(config.topic) if config.topic else Path(path) / "groundtruth.txt"
    return PoseTrajectory.from_tum_file(file, tolerance=config.tolerance, max_gap=config.max_gap)
