"""The package installs both ways: ament_python metadata for colcon, and a wheel with every data file for pip."""

import configparser
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
    source = tmp_path_factory.mktemp("source")  # setuptools writes build/ into the tree it builds
    for name in ("package.xml", "setup.py", "setup.cfg", "resource", "depth_ros", "launch", "config"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, source / name)
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


def test_wheel_declares_the_console_scripts(wheel):
    entry_points = next(n for n in wheel.namelist() if n.endswith("entry_points.txt"))
    text = wheel.read(entry_points).decode()
    for script in ("depth_node = depth_ros.ros.depth_node:main", "infer = depth_ros.tools.infer:main",
                   "adaptation_node = depth_ros.ros.adaptation_node:main", "play_bag = depth_ros.tools.play_bag:main",
                   "process_bag = depth_ros.tools.process_bag:main",
                   "depth_ros_export = depth_ros.tools.export:main"):
        assert script in text
