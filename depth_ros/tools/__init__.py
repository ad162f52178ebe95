"""depth_ros.tools"""
