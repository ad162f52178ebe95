"""The messages depth_node publishes for one pipeline output; shared by the node and the bag tool.

Topic names are relative (the node's namespace or the bag tool's ``--namespace`` places them).
"""

from __future__ import annotations

from depth_ros.pipeline import PipelineOutput
from depth_ros.ros.conversions import camera_info_msg, depth_to_image_msg, grid_to_msg, points_to_cloud_msg

# relative topic name -> message type of depth_node's outputs (except /diagnostics)
OUTPUT_TOPICS = {
    "depth": "sensor_msgs/msg/Image",
    "depth/camera_info": "sensor_msgs/msg/CameraInfo",
    "points": "sensor_msgs/msg/PointCloud2",
    "occupancy": "nav_msgs/msg/OccupancyGrid",
}
# sigma of depth (32FC1 m, depth's header), for checkpoints with a sigma head; depth_node publishes it while
# subscribed; not in OUTPUT_TOPICS (what the bag tool writes), so output_messages builds it only when asked by name
UNCERTAINTY_TOPIC = "depth/uncertainty"


def output_messages(out: PipelineOutput, header, grid_frame: str, grid_spec=None, topics=None) -> dict[str, object]:
    """rclpy messages for the parts of ``out`` that exist, restricted to ``topics``.

    Args:
        out: the pipeline's output for one image.
        header: that image's std_msgs/Header (rclpy or rosbags); depth, depth/camera_info and points copy it
            (REP 118: same stamp and optical frame as the image).
        grid_frame: frame_id of the occupancy grid; its stamp is the image's.
        grid_spec: the pipeline's :class:`~depth_ros.geometry.occupancy.GridSpec` (needed when ``out.grid`` is set).
        topics: names of :data:`OUTPUT_TOPICS` (and :data:`UNCERTAINTY_TOPIC`) to build (None: all of
            OUTPUT_TOPICS), e.g. those with subscribers.

    Returns:
        relative topic name -> message (depth always when asked for; the others when the output has them).
    """
    from std_msgs.msg import Header

    topics = OUTPUT_TOPICS.keys() if topics is None else topics
    messages = {}
    if "depth" in topics:
        messages["depth"] = depth_to_image_msg(out.depth, header)
    if UNCERTAINTY_TOPIC in topics and out.uncertainty is not None:
        messages[UNCERTAINTY_TOPIC] = depth_to_image_msg(out.uncertainty, header)
    if "depth/camera_info" in topics and out.camera is not None:
        messages["depth/camera_info"] = camera_info_msg(out.camera, header)
    if "points" in topics and out.cloud is not None:
        messages["points"] = points_to_cloud_msg(out.cloud, header)
    if "occupancy" in topics and out.grid is not None:
        grid_header = Header(frame_id=grid_frame)
        grid_header.stamp.sec, grid_header.stamp.nanosec = int(header.stamp.sec), int(header.stamp.nanosec)
        messages["occupancy"] = grid_to_msg(out.grid, grid_spec, grid_header)
    return messages
