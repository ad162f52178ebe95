"""Shared pytest set-up.

Before anything can start rclpy, every test process (and the node processes it spawns, which inherit the
environment) is confined to this machine (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) and put on a DDS domain of
its own, so parallel pytest workers and parallel CI runs never see each other.
"""

import os
from pathlib import Path

import pytest

from depth_ros.ros.dds import use_shipped_fastdds_profile
from depth_ros.testing import random_checkpoint

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _unique_domain_id() -> int:
    """A ROS_DOMAIN_ID in 1..100 that differs between the xdist workers of one run and, very likely, between runs."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker.startswith("gw") else 0
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    run = os.getppid() if "PYTEST_XDIST_WORKER" in os.environ else os.getpid()
    return 1 + (run * count + index) % 100


def pytest_configure(config):
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(_unique_domain_id())
    use_shipped_fastdds_profile()  # large best-effort images between processes (see config/fastdds_profile.xml)
    os.environ["HF_HUB_OFFLINE"] = "1"
    if "PYTEST_XDIST_WORKER" in os.environ:
        # One compute thread per worker (and per node process it starts): n workers on n cores, no oversubscription.
        os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (non-commercial data, kept outside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A metric vits checkpoint with seeded random weights (depth about 9 m; metadata input size 70, no focal)."""
    return random_checkpoint(tmp_path_factory.mktemp("random_checkpoint") / "random_vits.pth")
