"""depth_ros.models"""
