"""Networks of depth_ros: Depth Anything V2 (DINOv2 ViT encoder + DPT head, loads the official checkpoints) and
PackNet (packing encoder-decoder, light enough for CPU-only robots), behind one registry.

``create_model(metadata)`` builds either from a :class:`depth_ros.checkpoints.CheckpointMetadata`;
``ARCHITECTURES[name].preprocessing`` says what input it expects. ``DepthAnythingV2(encoder="vits", head="metric",
max_depth=20.0)`` and ``PackNet(variant="tiny", max_depth=20.0)`` build them directly.
"""

from depth_ros.models.depth_anything_v2 import ENCODERS, HEADS, MODEL_CONFIGS, DepthAnythingV2, ModelConfig
from depth_ros.models.packnet import PACKNET_CONFIGS, PackNet, PackNetConfig
from depth_ros.models.registry import (
    ARCHITECTURES,
    DEFAULT_ARCHITECTURE,
    Architecture,
    Preprocessing,
    create_model,
    depth_scales,
    get_architecture,
    network_size,
)

__all__ = ["ARCHITECTURES", "DEFAULT_ARCHITECTURE", "ENCODERS", "HEADS", "MODEL_CONFIGS", "PACKNET_CONFIGS",
           "Architecture", "DepthAnythingV2", "ModelConfig", "PackNet", "PackNetConfig", "Preprocessing",
           "create_model", "depth_scales", "get_architecture", "network_size"]
