"""The shipped Fast DDS profile: found from the source tree, honoured by the env helper, and large best-effort
images really cross between two processes with it (Fast DDS defaults drop them silently above ~512 KB)."""

import os
import subprocess
import sys
import textwrap
import time

from depth_ros.ros.dds import PROFILE_ENV_VARS, fastdds_profile_path, use_shipped_fastdds_profile

PUBLISHER = textwrap.dedent("""
    import sys, time
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init()
    node = rclpy.create_node("dds_test_publisher")
    publisher = node.create_publisher(Image, "dds_test_image", qos_profile_sensor_data)
    width, height, count = (int(a) for a in sys.argv[1:4])
    image = Image(width=width, height=height, encoding="rgb8", step=3 * width, data=bytes(3 * width * height))
    deadline = time.monotonic() + 20
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # let the subscriber's side of discovery finish too
    for _ in range(count):
        publisher.publish(image)
        time.sleep(0.05)
    time.sleep(1.0)
""")


def test_profile_helper_keeps_a_users_choice_and_sets_ours_otherwise(tmp_path):
    env = {}
    path = use_shipped_fastdds_profile(env)
    assert path == str(fastdds_profile_path()) and env == {"FASTDDS_DEFAULT_PROFILES_FILE": path}
    jazzy = {"ROS_DISTRO": "jazzy"}
    use_shipped_fastdds_profile(jazzy)
    assert all(jazzy[name] == path for name in PROFILE_ENV_VARS)
    assert fastdds_profile_path().read_text().count("<segment_size>33554432</segment_size>") == 1
    users = {"FASTRTPS_DEFAULT_PROFILES_FILE": str(tmp_path / "mine.xml")}
    assert use_shipped_fastdds_profile(users) == str(tmp_path / "mine.xml")
    assert "FASTDDS_DEFAULT_PROFILES_FILE" not in users


def test_best_effort_640x480_rgb8_images_arrive_between_processes():
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    env = dict(os.environ)
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert use_shipped_fastdds_profile(env) == str(fastdds_profile_path()), "tests must run with the shipped profile"
    sent = 10
    context = rclpy.Context()
    rclpy.init(context=context)
    received = []
    try:
        node = rclpy.create_node("dds_test_subscriber", context=context)
        node.create_subscription(Image, "dds_test_image", lambda m: received.append(len(m.data)),
                                 qos_profile_sensor_data)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER, "640", "480", str(sent)], env=env)
        try:
            deadline = time.monotonic() + 30
            while len(received) < sent and publisher.poll() is None and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
            executor.spin_once(timeout_sec=0.2)
        finally:
            publisher.kill()
            publisher.wait()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    assert len(received) >= sent - 1, f"only {len(received)} of {sent} best-effort 921,600-byte images arrived"
    assert set(received) == {640 * 480 * 3}
