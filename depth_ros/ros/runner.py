"""Running a node process: one FATAL line and exit 1 when start-up fails, clean shutdown on Ctrl-C."""

from __future__ import annotations

import re
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

from depth_ros.ros.dds import use_shipped_fastdds_profile


def run_node(factory: Callable[[], object], name: str, args=None) -> int:
    """Start rclpy, build the node with ``factory()`` and spin it until shutdown.

    Start-up errors (an unreadable ``--params-file``, a malformed ``-p`` override, a ConfigError, CheckpointError, a
    bad device, ...) end in one FATAL log line and exit status 1. The node's ``stop()`` runs before it is destroyed.

    Returns:
        The exit status: 0 after a shutdown, 1 when start-up failed.
    """
    use_shipped_fastdds_profile()
    try:
        rclpy.init(args=args)
        node = factory()
    except (_rclpy.RCLError, ValueError, OSError) as error:
        message = re.sub(r", at \S+:\d+", "", str(error))  # rcl's source locations mean nothing to users
        rclpy.logging.get_logger(name).fatal(f"cannot start: {message}")
        rclpy.try_shutdown()
        return 1
    except KeyboardInterrupt:
        rclpy.try_shutdown()
        return 0
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
