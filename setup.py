"""Build script for depth_ros: ament_python (colcon) and plain pip installs share it."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "depth_ros"

# ROS 2 Python wheels for the pip route; a sourced ROS 2 distro provides these itself.
ROS_WHEELS = [
    "ros-rclpy",
    "ros-sensor-msgs",
    "ros-nav-msgs",
    "ros-geometry-msgs",
    "ros-std-msgs",
    "ros-diagnostic-msgs",
    "ros-visualization-msgs",
    "ros-std-srvs",
    "ros-rmw-fastrtps-cpp",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    # The bundled checkpoint and its model card (weights/ is a data folder, not a module).
    package_data={PACKAGE: ["weights/*.safetensors", "weights/*.md"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy",
        "opencv-python-headless",
        "pyyaml",
        "torch",
        "safetensors",
        "huggingface_hub",
        "rosbags",
        "scipy",
        "tqdm",
        "matplotlib",
        "pillow",
        "open3d-cpu==0.19.0; platform_machine == 'x86_64'",
    ],
    extras_require={
        "ros": ROS_WHEELS,
        "hf": ["transformers"],
        "train": ["accelerate", "tensorboard", "h5py", "transformers", "peft"],
        "dev": ["pytest", "pytest-xdist", "ruff", "scikit-image", "transformers", "h5py"],
        # A real `colcon build` of this package without a ROS 2 distro (test/test_packaging.py).
        "colcon": ["colcon-core", "colcon-ros", "ros-ament-package"],
        "backends": ["onnx", "onnxscript", "onnxruntime", "openvino"],
    },
    zip_safe=True,
    maintainer="depth_ros maintainers",
    maintainer_email="maintainers@depth-ros.dev",
    description="Metric monocular depth (Depth Anything V2) for ROS 2",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "depth_node = depth_ros.ros.depth_node:main",
            "adaptation_node = depth_ros.ros.adaptation_node:main",
            "infer = depth_ros.tools.infer:main",
            "process_bag = depth_ros.tools.process_bag:main",
            "play_bag = depth_ros.tools.play_bag:main",
            "depth_ros_export = depth_ros.tools.export:main",
            "reconstruct = depth_ros.tools.reconstruct:main",
            "noisy_odometry = depth_ros.tools.noisy_odometry:main",
        ],
    },
)
