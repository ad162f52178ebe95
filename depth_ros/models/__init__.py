"""Networks of depth_ros: Depth Anything V2 (DINOv2 ViT encoder + DPT head), loading the official checkpoints.

``DepthAnythingV2(encoder="vits", head="metric", max_depth=20.0)``; ``MODEL_CONFIGS`` maps each name in
``ENCODERS`` to its architecture.
"""

from depth_ros.models.depth_anything_v2 import ENCODERS, HEADS, MODEL_CONFIGS, DepthAnythingV2, ModelConfig

__all__ = ["ENCODERS", "HEADS", "MODEL_CONFIGS", "DepthAnythingV2", "ModelConfig"]
