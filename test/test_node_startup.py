"""depth_node start-up failures: a bad checkpoint or parameter ends the process non-zero with one clear line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from depth_ros.testing import random_checkpoint

NODE_SCRIPT = Path(sys.executable).with_name("depth_node")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("startup_checkpoints")
    relative = random_checkpoint(folder / "relative.pth", head="relative", max_depth=1.0)
    truncated = folder / "truncated.pth"
    truncated.write_bytes(relative.read_bytes()[:4096])
    return {"relative": relative, "truncated": truncated, "missing": folder / "missing.pth"}


@pytest.mark.parametrize(
    ("checkpoint", "args", "message"),
    [
        ("missing", [], "missing.pth: no such checkpoint file"),
        ("truncated", [], "truncated.pth"),
        ("relative", [], "the checkpoint has a relative (inverse-depth) head"),
        ("relative", ["-p", "output_scale:=2.0"], "parameter 'output_scale' must be in (0, 1] (got 2.0)"),
        ("relative", ["-p", "min_depth:=near"], "parameter 'min_depth' must be a finite number (got 'near')"),
        ("relative", ["-p", "max_detph:=5.0"], "unknown parameter(s): max_detph"),
        ("relative", ["-p", "grid_resolution:=1e-7"], "parameter 'grid_resolution' gives 10000000000000000 grid cells"),
        ("relative", ["-p", "diagnostics_period:=1e-6"], "parameter 'diagnostics_period' must be >= 0.1 s"),
        ("relative", ["--params-file", "/nope.yaml"], "Couldn't parse params file: '--params-file /nope.yaml'"),
        ("relative", ["-p", "checkpoint:=[unclosed"], "Couldn't parse parameter override rule"),
    ],
)
def test_bad_start_up_exits_with_one_clear_line(checkpoints, checkpoint, args, message):
    args = [str(NODE_SCRIPT), "--ros-args", "-r", "__ns:=/startup", "-p", f"checkpoint:={checkpoints[checkpoint]}",
            *args]
    env = dict(os.environ, RCUTILS_COLORIZED_OUTPUT="0")
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    fatal = [line for line in lines if "[FATAL]" in line]
    assert len(fatal) == 1 and message in fatal[0] and "cannot start" in fatal[0], lines
    assert "Traceback" not in result.stderr


ADAPTATION_SCRIPT = Path(sys.executable).with_name("adaptation_node")


def _tf2_ros_missing() -> bool:
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        return True
    return False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "pose_source:=gps"], "parameter 'pose_source' must be one of odom, tf (got 'gps')"),
        (["-p", "output_dir:={file}"], "parameter 'output_dir' names an existing file, not a folder"),
        (["-p", "output_dir:={file}/adapted"], "parameter 'output_dir' lies under"),
        pytest.param(["-p", "pose_source:=tf"], "parameter 'pose_source' tf needs tf2_ros",
                     marks=pytest.mark.skipif(not _tf2_ros_missing(), reason="tf2_ros is installed here")),
    ],
)
def test_adaptation_node_bad_parameter_exits_with_one_clear_line(tmp_path, args, message):
    start = random_checkpoint(tmp_path / "start.pth", input_size=42)
    (tmp_path / "a_file").write_text("not a folder")
    args = [str(ADAPTATION_SCRIPT), "--ros-args", "-r", "__ns:=/startup", "-p", f"checkpoint:={start}",
            "-p", f"output_dir:={tmp_path / 'out'}", "-p", "depth_node_name:=''",
            *(arg.format(file=tmp_path / "a_file") for arg in args)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, RCUTILS_COLORIZED_OUTPUT="0"))
    assert result.returncode == 1, result.stderr
    fatal = [line for line in (result.stdout + result.stderr).splitlines() if "[FATAL]" in line]
    assert len(fatal) == 1 and message in fatal[0], result.stdout + result.stderr
    assert "Traceback" not in result.stderr
