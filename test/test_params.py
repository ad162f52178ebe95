"""depth_node parameters: the documented YAML matches the typed config, and bad values give readable errors."""

import math
from pathlib import Path

import pytest
import yaml

from depth_ros.ros.adaptation_node import AdaptationNodeConfig
from depth_ros.ros.params import ConfigError, NodeConfig, declare_and_load

CONFIG = Path(__file__).resolve().parents[1] / "config"
YAML = CONFIG / "depth.yaml"


def _yaml_values(path: Path = YAML) -> dict:
    return yaml.safe_load(path.read_text())["/**"]["ros__parameters"]


@pytest.mark.parametrize("table", [NodeConfig, AdaptationNodeConfig], ids=lambda table: table.NODE_NAME)
def test_yaml_documents_every_parameter_with_its_default(table):
    path = CONFIG.parent / table.PARAMS_FILE
    values = _yaml_values(path)
    assert sorted(values) == sorted(table.defaults())
    if table is AdaptationNodeConfig:
        values["checkpoint"] = "start.pth"  # the one parameter without a usable default
    assert table.from_values(values) == table.from_values({"checkpoint": values["checkpoint"]})
    text = path.read_text()
    for name in values:  # each parameter has a comment right above it (or shares the one above its pair)
        line = next(i for i, row in enumerate(text.splitlines()) if row.strip().startswith(f"{name}:"))
        above = text.splitlines()[line - 1].strip()
        assert above.startswith("#") or above.split(":")[0] in values, f"{name} has no comment in {path.name}"


def test_values_are_converted_to_their_types():
    config = NodeConfig.from_values({"min_depth": 1, "camera_to_base": [1, 2, 3, 0, 0, 0], "cloud_organized": False,
                                     "cloud_stride": 4})
    assert config.min_depth == 1.0 and isinstance(config.min_depth, float)
    assert config.camera_to_base == (1.0, 2.0, 3.0, 0.0, 0.0, 0.0)
    assert config.cloud_stride == 4


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"min_depth": "near"}, "parameter 'min_depth' must be a finite number (got 'near')"),
        ({"min_depth": math.nan}, "parameter 'min_depth' must be a finite number"),
        ({"input_size": 140.0}, "parameter 'input_size' must be an integer"),
        ({"input_size": -14},
         "parameter 'input_size' must be 0 (the checkpoint's) or a positive number of px (got -14)"),
        ({"colored": 1}, "parameter 'colored' must be a boolean"),
        ({"checkpoint": ""}, "parameter 'checkpoint' must name a checkpoint file or model id"),
        ({"precision": "fp8"}, "parameter 'precision' must be one of fp32, fp16, bf16 (got 'fp8')"),
        ({"min_depth": 5.0, "max_depth": 2.0}, "parameter 'max_depth' must be > min_depth (5.0 m) (got 2.0)"),
        ({"output_scale": 0.0}, "parameter 'output_scale' must be in (0, 1]"),
        ({"voxel_size": 0.1}, "parameter 'voxel_size' > 0 needs cloud_organized: false"),
        ({"cloud_stride": 2}, "parameter 'cloud_stride' > 1 needs cloud_organized: false"),
        ({"camera_to_base": [0.0, 1.0]}, "parameter 'camera_to_base' must have 6 numbers"),
        ({"camera_to_base": ["a"] * 6}, "parameter 'camera_to_base' must be a list of finite numbers"),
        ({"grid_resolution": -0.05}, "parameter 'grid_resolution' must be > 0 m"),
        ({"min_obstacle_height": 1.0, "max_obstacle_height": 0.5}, "parameter 'max_obstacle_height' must be >"),
        ({"min_dpeth": 1.0}, "unknown parameter(s): min_dpeth"),
        ({"grid_resolution": 1e-7},
         "parameter 'grid_resolution' gives 10000000000000000 grid cells, more than 4000000"),
        ({"grid_size_x": 1000.0, "grid_size_y": 1000.0}, "parameter 'grid_resolution' gives 400000000 grid cells"),
        ({"diagnostics_period": 1e-6}, "parameter 'diagnostics_period' must be >= 0.1 s (got 1e-06)"),
        ({"max_image_pixels": 100}, "parameter 'max_image_pixels' must be >= 196 px"),
    ],
)
def test_bad_values_name_the_parameter_and_the_rule(values, message):
    with pytest.raises(ConfigError) as error:
        NodeConfig.from_values(values)
    assert message in str(error.value)


def test_declared_on_a_real_node_read_only_with_descriptions():
    import rclpy
    from rclpy.parameter import Parameter

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node(
            "params_test", context=context,
            parameter_overrides=[Parameter("max_depth", value=8), Parameter("grid_frame", value="odom")])
        config = declare_and_load(node)
        assert config.max_depth == 8.0 and config.grid_frame == "odom" and config.min_depth == 0.1
        described = node.describe_parameter("max_depth")
        assert described.read_only and "m." in described.description
        result = node.set_parameters([Parameter("max_depth", value=9.0)])[0]
        assert not result.successful
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
