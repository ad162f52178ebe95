"""depth_ros: metric monocular depth (Depth Anything V2) for ROS 2.

The top-level import stays light: ``DepthEstimator`` (and with it torch) is loaded on first access.
"""

__all__ = ["DepthEstimator"]


def __getattr__(name):
    if name == "DepthEstimator":
        from depth_ros.estimator import DepthEstimator

        return DepthEstimator
    raise AttributeError(f"module 'depth_ros' has no attribute {name!r}")
