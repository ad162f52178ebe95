"""depth_ros.data"""
