"""depth_ros.ros"""
