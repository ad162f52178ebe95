"""The package installs both ways: a wheel with every data file for pip, and a real `colcon build` (ament_python)."""

import configparser
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COLCON = Path(sys.executable).with_name("colcon")
SCRIPTS = ("depth_node", "adaptation_node", "infer", "process_bag", "play_bag", "depth_ros_export", "reconstruct",
           "noisy_odometry")
# Written into every copied source tree: the weights globs are checked even before real weights are bundled.
PROBES = ("weights/packaging-probe.safetensors", "weights/packaging-probe.md")


def _bundled_files() -> list[str]:
    """Package-relative paths that must be installed with the package: the probes and every bundled weight/card."""
    weights = REPO / "depth_ros" / "weights"
    found = [f"weights/{p.name}" for p in sorted(weights.glob("*")) if p.suffix in (".safetensors", ".md")]
    return [*PROBES, *found]


def _copy_source(dest: Path) -> Path:
    """The files a build reads, copied (builds write egg-info and build/ beside them), plus the weight probes."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("package.xml", "setup.py", "setup.cfg", "resource", "depth_ros", "launch", "config"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, dest / name)
    for probe in PROBES:
        (dest / "depth_ros" / probe).parent.mkdir(exist_ok=True)
        (dest / "depth_ros" / probe).write_bytes(f"probe {probe}".encode())
    return dest


def test_package_xml_is_format3_ament_python_with_runtime_dependencies():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "depth_ros"
    assert root.find("export/build_type").text == "ament_python"
    depends = {e.text for e in root.findall("exec_depend")}
    required = {"rclpy", "sensor_msgs", "nav_msgs", "geometry_msgs", "std_msgs", "diagnostic_msgs", "cv_bridge",
                "tf2_ros", "python3-numpy", "python3-opencv", "python3-yaml"}
    assert required <= depends, required - depends


def test_scripts_install_where_ros2_run_finds_them():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    assert config["develop"]["script_dir"] == "$base/lib/depth_ros"
    assert config["install"]["install_scripts"] == "$base/lib/depth_ros"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    source = _copy_source(tmp_path_factory.mktemp("source"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, timeout=300)
    return zipfile.ZipFile(next(out.glob("depth_ros-*.whl")))


def test_wheel_carries_launch_config_and_ament_index(wheel):
    names = set(wheel.namelist())
    data = "depth_ros-0.1.0.data/data/share/"
    expected = [f"{data}ament_index/resource_index/packages/depth_ros", f"{data}depth_ros/package.xml",
                f"{data}depth_ros/launch/depth.launch.py"]
    expected += [f"{data}depth_ros/config/{p.name}" for p in (REPO / "config").iterdir() if p.is_file()]
    assert not [name for name in expected if name not in names]
    assert {"depth_ros/estimator.py", "depth_ros/models/dinov2.py", "depth_ros/ros/depth_node.py"} <= names
    assert not [name for name in _bundled_files() if f"depth_ros/{name}" not in names]


def test_wheel_declares_the_console_scripts(wheel):
    entry_points = next(n for n in wheel.namelist() if n.endswith("entry_points.txt"))
    text = wheel.read(entry_points).decode()
    for script in ("depth_node = depth_ros.ros.depth_node:main", "infer = depth_ros.tools.infer:main",
                   "adaptation_node = depth_ros.ros.adaptation_node:main", "play_bag = depth_ros.tools.play_bag:main",
                   "process_bag = depth_ros.tools.process_bag:main",
                   "depth_ros_export = depth_ros.tools.export:main", "reconstruct = depth_ros.tools.reconstruct:main",
                   "noisy_odometry = depth_ros.tools.noisy_odometry:main"):
        assert script in text


def _colcon_build(workspace: Path, *options: str) -> Path:
    """`colcon build` of a copy of this package in ``workspace``; returns the install folder."""
    if not COLCON.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{COLCON} missing: CI installs the colcon extra (make setup)")
        pytest.skip(f"colcon is not installed beside {sys.executable} (pip install -e '.[colcon]')")
    _copy_source(workspace / "src" / "depth_ros")
    result = subprocess.run([str(COLCON), "--log-base", "log", "build", "--base-paths", "src", *options],
                            cwd=workspace, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workspace / "install"


def _sourced(install: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``args`` run in the workspace (not the repo: `python -c` imports from its cwd) after sourcing setup.sh."""
    env = dict(os.environ, RCUTILS_COLORIZED_OUTPUT="0")
    for name in ("PYTHONPATH", "AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH"):
        env.pop(name, None)  # only what setup.sh adds
    return subprocess.run(["bash", "-c", f'. "{install}/setup.sh" && exec "$@"', "bash", *args],
                          cwd=install.parent, capture_output=True, text=True, timeout=timeout, env=env)


# Where the sourced workspace resolves the package: module, share directory (launch files use it) and weights.
LOCATE = """
import importlib.resources, depth_ros
from ament_index_python.packages import get_package_share_directory
print(depth_ros.__file__)
print(get_package_share_directory("depth_ros"))
for name in {files!r}:
    print(importlib.resources.files("depth_ros").joinpath(name).read_bytes().hex())
"""


def _assert_located(install: Path, package_root: Path) -> None:
    files = _bundled_files()
    result = _sourced(install, sys.executable, "-c", LOCATE.format(files=files))
    assert result.returncode == 0, result.stderr
    module, share, *contents = result.stdout.splitlines()
    assert Path(module).resolve() == (package_root / "__init__.py").resolve()
    assert Path(share) == install / "depth_ros" / "share" / "depth_ros"
    expected = [(f"probe {n}".encode() if n in PROBES else (REPO / "depth_ros" / n).read_bytes()).hex() for n in files]
    assert contents == expected


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory) -> Path:
    return _colcon_build(tmp_path_factory.mktemp("colcon_ws"))


@pytest.mark.xdist_group("colcon")
def test_colcon_build_installs_share_files_and_the_package_with_its_weights(colcon_install):
    share = colcon_install / "depth_ros" / "share"
    expected = [share / "ament_index/resource_index/packages/depth_ros", share / "depth_ros/package.xml"]
    expected += [share / "depth_ros/launch" / p.name for p in (REPO / "launch").glob("*.launch.py")]
    expected += [share / "depth_ros/config" / p.name for p in (REPO / "config").iterdir() if p.is_file()]
    assert len(expected) > 4 and not [p for p in expected if not p.is_file()]
    site = next((colcon_install / "depth_ros" / "lib").glob("python3*/site-packages/depth_ros"))
    assert not [name for name in _bundled_files() if not (site / name).is_file()]
    _assert_located(colcon_install, site)


@pytest.mark.xdist_group("colcon")
def test_colcon_console_scripts_start(colcon_install, tmp_path):
    bindir = colcon_install / "depth_ros" / "lib" / "depth_ros"
    assert sorted(p.name for p in bindir.iterdir()) == sorted(SCRIPTS)
    for script in ("infer", "process_bag", "play_bag", "depth_ros_export"):
        result = _sourced(colcon_install, str(bindir / script), "--help")
        assert result.returncode == 0 and result.stdout.startswith(f"usage: {script}"), result.stderr
    missing = tmp_path / "missing.pth"
    for node in ("depth_node", "adaptation_node"):
        result = _sourced(colcon_install, str(bindir / node), "--ros-args", "-p", f"checkpoint:={missing}")
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        fatal = [line for line in lines if "[FATAL]" in line]
        assert result.returncode == 1 and len(fatal) == 1 and "no such checkpoint file" in fatal[0], lines
        assert "Traceback" not in result.stderr


@pytest.mark.xdist_group("colcon")
def test_colcon_symlink_install_finds_the_weights_in_the_source_tree(tmp_path):
    install = _colcon_build(tmp_path, "--symlink-install")
    assert (install / "depth_ros/share/depth_ros/launch/depth.launch.py").is_file()
    assert (install / "depth_ros/lib/depth_ros/depth_node").is_file()
    _assert_located(install, tmp_path / "build" / "depth_ros" / "depth_ros")
