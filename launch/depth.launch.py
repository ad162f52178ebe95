"""Launch depth_node next to a camera driver, optionally with adaptation_node beside it.

    ros2 launch depth_ros depth.launch.py camera:=/camera/color image:=image_raw checkpoint:=/path/to/model.pth
    ros2 launch depth_ros depth.launch.py checkpoint:=/path/to/model.pth adapt:=true output_dir:=adapted

Arguments:
    camera: namespace of the camera's topics; the node runs in it, so it reads <camera>/<image> and
        <camera>/camera_info and publishes <camera>/depth, depth/camera_info, points and occupancy.
    image: name of the image topic inside that namespace (image_raw, image_rect_color, ...); with
        use_compressed: true in the params file, <camera>/<image>/compressed is read instead.
    params_file: depth_node parameters (default: the documented config/depth.yaml of this package).
    checkpoint: checkpoint file or model id; empty keeps the one in params_file.
    adapt: true also starts adaptation_node in the same namespace, on the same image and camera_info, which hands
        its adapted weights to this depth_node (its ``checkpoint`` parameter). It starts from depth_node's starting
        checkpoint (``checkpoint``, else the one in params_file) and sets ``depth_node_name`` to ``depth_node``
        (relative: the depth_node of this namespace).
    adaptation_params_file: adaptation_node parameters (default: config/adaptation.yaml of this package).
    output_dir: folder of the adapted weights (latest.pth there is the newest); empty keeps the params file's.
    odom: nav_msgs/Odometry topic adaptation_node reads (its relative ``odom`` is remapped to it).

Fast DDS: FASTDDS_DEFAULT_PROFILES_FILE (and FASTRTPS_DEFAULT_PROFILES_FILE for Fast DDS 2) are pointed at the
shipped config/fastdds_profile.xml unless you set one, so best-effort images over ~512 KB are not dropped.
"""

import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from depth_ros.ros.dds import use_shipped_fastdds_profile
from launch import LaunchDescription

DEPTH_NODE_NAME = "depth_node"


def _file_checkpoint(params_file: str) -> str:
    """The ``checkpoint`` a depth_node params file sets (under ``/**`` or ``depth_node``); empty when it sets none."""
    with open(params_file) as file:
        content = yaml.safe_load(file) or {}
    for key in ("/**", DEPTH_NODE_NAME, f"/{DEPTH_NODE_NAME}"):
        checkpoint = (content.get(key) or {}).get("ros__parameters", {}).get("checkpoint")
        if checkpoint:
            return str(checkpoint)
    return ""


def _nodes(context):
    params_file = LaunchConfiguration("params_file").perform(context)
    checkpoint = LaunchConfiguration("checkpoint").perform(context)
    namespace = LaunchConfiguration("camera").perform(context)
    image = LaunchConfiguration("image").perform(context)
    image_remappings = [("image", image), ("image/compressed", f"{image}/compressed")]
    nodes = [
        Node(
            package="depth_ros",
            executable="depth_node",
            name=DEPTH_NODE_NAME,
            namespace=namespace,
            parameters=[params_file, *([{"checkpoint": checkpoint}] if checkpoint else [])],
            remappings=image_remappings,
            output="screen",
        )
    ]
    if LaunchConfiguration("adapt").perform(context).lower() in ("true", "1", "yes"):
        overrides = {"checkpoint": checkpoint or _file_checkpoint(params_file), "depth_node_name": DEPTH_NODE_NAME}
        output_dir = LaunchConfiguration("output_dir").perform(context)
        if output_dir:
            overrides["output_dir"] = output_dir
        nodes.append(
            Node(
                package="depth_ros",
                executable="adaptation_node",
                name="adaptation_node",
                namespace=namespace,
                parameters=[LaunchConfiguration("adaptation_params_file").perform(context), overrides],
                remappings=[*image_remappings, ("odom", LaunchConfiguration("odom").perform(context))],
                output="screen",
            )
        )
    return nodes


def generate_launch_description():
    environment = dict(os.environ)
    use_shipped_fastdds_profile(environment)
    profile_actions = [
        SetEnvironmentVariable(name, value) for name, value in environment.items() if os.environ.get(name) != value
    ]
    config = os.path.join(get_package_share_directory("depth_ros"), "config")
    return LaunchDescription(
        [
            DeclareLaunchArgument("camera", default_value="/camera/color", description="camera topic namespace"),
            DeclareLaunchArgument("image", default_value="image_raw", description="image topic in that namespace"),
            DeclareLaunchArgument("params_file", default_value=os.path.join(config, "depth.yaml"),
                                  description="depth_node parameters"),
            DeclareLaunchArgument("checkpoint", default_value="", description="checkpoint file or model id"),
            DeclareLaunchArgument("adapt", default_value="false", description="also start adaptation_node"),
            DeclareLaunchArgument("adaptation_params_file", default_value=os.path.join(config, "adaptation.yaml"),
                                  description="adaptation_node parameters"),
            DeclareLaunchArgument("output_dir", default_value="", description="folder of the adapted weights"),
            DeclareLaunchArgument("odom", default_value="/odom", description="odometry topic for adaptation_node"),
            *profile_actions,
            OpaqueFunction(function=_nodes),
        ]
    )
