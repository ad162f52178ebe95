"""depth_ros.geometry"""
