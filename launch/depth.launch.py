"""Launch depth_node next to a camera driver.

    ros2 launch depth_ros depth.launch.py camera:=/camera/color image:=image_raw checkpoint:=/path/to/model.pth

Arguments:
    camera: namespace of the camera's topics; the node runs in it, so it reads <camera>/<image> and
        <camera>/camera_info and publishes <camera>/depth, depth/camera_info, points and occupancy.
    image: name of the image topic inside that namespace (image_raw, image_rect_color, ...); with
        use_compressed: true in the params file, <camera>/<image>/compressed is read instead.
    params_file: depth_node parameters (default: the documented config/depth.yaml of this package).
    checkpoint: checkpoint file or model id; empty keeps the one in params_file.

Fast DDS: FASTDDS_DEFAULT_PROFILES_FILE (and FASTRTPS_DEFAULT_PROFILES_FILE for Fast DDS 2) are pointed at the
shipped config/fastdds_profile.xml unless you set one, so best-effort images over ~512 KB are not dropped.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from depth_ros.ros.dds import use_shipped_fastdds_profile
from launch import LaunchDescription


def _depth_node(context):
    parameters = [LaunchConfiguration("params_file").perform(context)]
    checkpoint = LaunchConfiguration("checkpoint").perform(context)
    if checkpoint:
        parameters.append({"checkpoint": checkpoint})
    image = LaunchConfiguration("image").perform(context)
    return [
        Node(
            package="depth_ros",
            executable="depth_node",
            name="depth_node",
            namespace=LaunchConfiguration("camera").perform(context),
            parameters=parameters,
            remappings=[("image", image), ("image/compressed", f"{image}/compressed")],
            output="screen",
        )
    ]


def generate_launch_description():
    environment = dict(os.environ)
    use_shipped_fastdds_profile(environment)
    profile_actions = [
        SetEnvironmentVariable(name, value) for name, value in environment.items() if os.environ.get(name) != value
    ]
    default_params = os.path.join(get_package_share_directory("depth_ros"), "config", "depth.yaml")
    return LaunchDescription(
        [
            DeclareLaunchArgument("camera", default_value="/camera/color", description="camera topic namespace"),
            DeclareLaunchArgument("image", default_value="image_raw", description="image topic in that namespace"),
            DeclareLaunchArgument("params_file", default_value=default_params, description="depth_node parameters"),
            DeclareLaunchArgument("checkpoint", default_value="", description="checkpoint file or model id"),
            *profile_actions,
            OpaqueFunction(function=_depth_node),
        ]
    )
