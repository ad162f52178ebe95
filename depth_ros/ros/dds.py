"""Point Fast DDS at the profile shipped in ``config/fastdds_profile.xml`` (larger shared-memory segment).

Fast DDS with its default shared-memory segment (512 KiB) silently drops best-effort samples above about that size
between processes, i.e. every 640x480 rgb8 image. The shipped profile enlarges the segment; see the comment in the
XML file. This module has no rclpy import: call :func:`use_shipped_fastdds_profile` before ``rclpy.init``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

_LOG = logging.getLogger(__name__)
PACKAGE = "depth_ros"
PROFILE_NAME = "fastdds_profile.xml"
# Fast DDS 3 (ROS 2 Kilted and newer) reads the first name, Fast DDS 2 (Humble, Jazzy) the second (Fast DDS 3 warns
# that it is deprecated, so it is only set for those distros).
PROFILE_ENV_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
FAST_DDS_2_DISTROS = ("humble", "iron", "jazzy")


def fastdds_profile_path() -> Path:
    """Locate the shipped Fast DDS profile.

    Looked up, in order: the package share directory from the ament index (colcon install), the source tree this
    module lives in (editable install, tests), and ``<sys.prefix>/share/depth_ros/config`` (plain pip install).

    Returns:
        Absolute path of ``fastdds_profile.xml``.

    Raises:
        FileNotFoundError: when none of those places has it (the message lists where it looked).
    """
    candidates = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            candidates.append(Path(get_package_share_directory(PACKAGE)) / "config" / PROFILE_NAME)
        except (PackageNotFoundError, OSError):  # not installed with colcon, or no AMENT_PREFIX_PATH at all
            pass
    except ImportError:
        pass
    candidates.append(Path(__file__).resolve().parents[2] / "config" / PROFILE_NAME)
    candidates.append(Path(sys.prefix) / "share" / PACKAGE / "config" / PROFILE_NAME)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{PROFILE_NAME} not found; looked in: {', '.join(str(c) for c in candidates)}")


def use_shipped_fastdds_profile(env: MutableMapping[str, str] | None = None) -> str | None:
    """Set ``FASTDDS_DEFAULT_PROFILES_FILE`` to the shipped profile unless a profile is already set.

    A profile the user chose (either variable set and non-empty) is left alone. On Fast DDS 2 distros (``ROS_DISTRO``
    humble, iron, jazzy) ``FASTRTPS_DEFAULT_PROFILES_FILE`` is set too. Must run before the DDS participant
    exists, i.e. before ``rclpy.init``; child processes inherit it when ``env`` is ``os.environ`` or is passed to them.

    Args:
        env: environment mapping to update; ``os.environ`` by default.

    Returns:
        The profile file now in effect (the user's or ours), or ``None`` when none is set and ours cannot be found.
    """
    env = os.environ if env is None else env
    for name in PROFILE_ENV_VARS:
        if env.get(name):
            return env[name]
    try:
        path = str(fastdds_profile_path())
    except FileNotFoundError as error:
        _LOG.warning("%s; Fast DDS keeps its defaults (best-effort images over ~512 KB may be dropped)", error)
        return None
    env[PROFILE_ENV_VARS[0]] = path
    if env.get("ROS_DISTRO") in FAST_DDS_2_DISTROS:
        env[PROFILE_ENV_VARS[1]] = path
    return path
