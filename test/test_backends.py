"""Inference backends: ONNX export, ONNX Runtime / OpenVINO parity with torch on real images, the start-up self-check,
clear errors; TensorRT and CUDA paths when a GPU is present.

Random-weight checkpoints at small input sizes (Depth Anything V2 vits at 70 px, PackNet tiny at 64 px) keep the
runs short; the ONNX exports (about 10-20 s each on a 2-core CPU) are made once per module.
"""

import sys
import time

import numpy as np
import pytest
import torch

from depth_ros.backends import TOLERANCES, BackendError, read_onnx_metadata, relative_difference
from depth_ros.checkpoints import CheckpointError
from depth_ros.data.images import read_image
from depth_ros.estimator import DepthEstimator
from depth_ros.pipeline import DepthPipeline
from depth_ros.ros.params import ConfigError, NodeConfig
from depth_ros.testing import random_checkpoint
from depth_ros.tools import export, infer

pytestmark = pytest.mark.xdist_group("backends")  # one worker: the module's exports are made once

PARITY = 1e-4  # fp32 runtimes against torch fp32: max relative difference of the upsampled depth
ARCHITECTURES = {"vits": ("depth_anything_v2", "vits", 70), "packnet": ("packnet", "tiny", 64)}


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """Exports and engines go to a folder of this module, not the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("depth_ros_cache")
        patch.setenv("DEPTH_ROS_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("backend_checkpoints")
    return {name: random_checkpoint(folder / f"{name}.pth", encoder, size, architecture=architecture)
            for name, (architecture, encoder, size) in ARCHITECTURES.items()}


@pytest.fixture(scope="module")
def vits_onnx(checkpoints, tmp_path_factory):
    """The vits checkpoint exported with ``depth_ros_export`` for 640x480 cameras (network input 70x98)."""
    path = tmp_path_factory.mktemp("onnx") / "vits_640x480.onnx"
    assert export.main([str(checkpoints["vits"]), str(path), "--image-size", "640x480"]) == 0
    return path


@pytest.fixture(scope="module")
def estimators(checkpoints, vits_onnx) -> dict:
    """(model, backend) -> estimator, built once: vits runs the depth_ros_export file, PackNet the cached export."""
    built = {}

    def get(model: str, backend: str = "torch", precision: str = "fp32") -> DepthEstimator:
        key = (model, backend, precision)
        if key not in built:
            onnx = vits_onnx if model == "vits" and backend != "torch" else None
            built[key] = DepthEstimator.from_checkpoint(checkpoints[model], device="cpu", backend=backend,
                                                        precision=precision, backend_model=onnx)
        return built[key]

    return get


@pytest.fixture(params=["demo", "7scenes"])
def image(request) -> np.ndarray:
    """The built-in demo image (Middlebury Motorcycle, 640x432) or a 7-Scenes frame (640x480)."""
    if request.param == "7scenes":
        folder = request.getfixturevalue("shared_data") / "7scenes_redkitchen" / "frames"
        return read_image(folder / "frame-000000.color.jpg")
    pytest.importorskip("skimage", reason="the demo image comes with scikit-image (pip install scikit-image)")
    from depth_ros.tools.demo import motorcycle_frame

    return motorcycle_frame().rgb


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("model", list(ARCHITECTURES))
def test_fp32_backends_match_torch_on_real_images(estimators, model, backend, image):
    reference = estimators(model).infer(image, fx=500.0)
    estimator = estimators(model, backend)
    assert estimator.backend is not None and estimator.backend.NAME == backend  # no silent fallback to torch
    depth = estimator.infer(image, fx=500.0)
    assert depth.shape == image.shape[:2] and depth.dtype == np.float32
    assert relative_difference(depth, reference) <= PARITY
    batch = estimator.infer_batch([image, image[::-1].copy()])
    assert relative_difference(batch[0], reference) <= PARITY  # batches run image by image on the same runner


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_openvino_reduced_precision_within_its_tolerance(estimators, precision, image):
    import openvino

    if precision.upper() not in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip(f"this CPU has no OpenVINO {precision} support")
    reference = estimators("vits").infer(image)
    difference = relative_difference(estimators("vits", "openvino", precision).infer(image), reference)
    assert 0 < difference <= TOLERANCES[precision]  # really reduced (not fp32), and close


def test_exported_file_carries_metadata_and_size(vits_onnx, checkpoints, tmp_path, capsys):
    import onnx

    metadata, shape = read_onnx_metadata(vits_onnx)
    assert metadata == DepthEstimator.from_checkpoint(checkpoints["vits"], device="cpu").metadata
    assert shape == (70, 98)
    props = {p.key: p.value for p in onnx.load(str(vits_onnx), load_external_data=False).metadata_props}
    assert '"mean": [0.485, 0.456, 0.406]' in props["depth_ros_preprocessing"]
    assert export.main([str(checkpoints["vits"]), str(tmp_path / "dynamic.onnx"), "--dynamic"]) == 1
    assert "depth_anything_v2 cannot be exported with dynamic height/width" in capsys.readouterr().err
    assert not (tmp_path / "dynamic.onnx").exists()


def _corrupted_copy(source, target):
    import onnx

    proto = onnx.load(str(source))
    head = max((t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT),
               key=lambda t: int(np.prod(t.dims)))
    values = onnx.numpy_helper.to_array(head)
    head.CopyFrom(onnx.numpy_helper.from_array(values * 1.5, head.name))  # a wrong-but-loadable weight
    onnx.save(proto, str(target))
    return target


def test_self_check_rejects_a_corrupted_model_file(checkpoints, vits_onnx, tmp_path, caplog):
    corrupted = _corrupted_copy(vits_onnx, tmp_path / "corrupted.onnx")
    for backend in ("onnxruntime", "openvino"):
        with pytest.raises(BackendError, match=f"backend {backend} fp32 self-check failed: depth differs"):
            DepthEstimator.from_checkpoint(checkpoints["vits"], device="cpu", backend=backend,
                                           backend_model=corrupted)
    fallback = DepthEstimator.from_checkpoint(checkpoints["vits"], device="cpu", backend="onnxruntime",
                                              backend_model=corrupted, backend_fallback=True)
    assert fallback.backend is None and "falling back to torch" in caplog.text
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(vits_onnx.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cannot read ONNX file"):
        DepthEstimator.from_checkpoint(checkpoints["vits"], device="cpu", backend="onnxruntime",
                                       backend_model=truncated)


def test_onnx_file_of_another_model_or_size_is_refused(checkpoints, vits_onnx, estimators):
    with pytest.raises(BackendError, match="exported from another model"):
        DepthEstimator.from_checkpoint(checkpoints["packnet"], device="cpu", backend="openvino",
                                       backend_model=vits_onnx)
    square = np.zeros((480, 480, 3), np.uint8)  # network input 70x70, the file takes 70x98
    with pytest.raises(BackendError, match="takes a 70x98 network input but this image needs 70x70"):
        estimators("vits", "openvino").infer(square)


def test_missing_runtime_and_unsupported_precision_give_one_line(checkpoints, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import fails as if not installed
    with pytest.raises(BackendError) as error:
        DepthEstimator.from_checkpoint(checkpoints["packnet"], device="cpu", backend="openvino")
    assert str(error.value) == "backend openvino needs the Python package 'openvino': pip install openvino"
    with pytest.raises(BackendError, match="backend onnxruntime supports precision fp32 here, not bf16"):
        DepthEstimator.from_checkpoint(checkpoints["packnet"], device="cpu", backend="onnxruntime",
                                       precision="bf16")
    with pytest.raises(ConfigError, match="parameter 'backend' must be one of torch, onnxruntime"):
        NodeConfig.from_values({"backend": "tflite"})


def test_node_config_and_infer_cli_select_the_backend(checkpoints, estimators, tmp_path):
    config = NodeConfig.from_values({"checkpoint": str(checkpoints["packnet"]), "backend": "onnxruntime"})
    assert DepthPipeline.from_config(config).estimator.backend.NAME == "onnxruntime"
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    from depth_ros.visualize import save_image

    save_image(tmp_path / "frame.png", rgb)
    assert infer.main([str(tmp_path / "frame.png"), "--checkpoint", str(checkpoints["packnet"]), "--device", "cpu",
                       "--backend", "openvino", "--out", str(tmp_path / "out")]) == 0
    depth = np.load(tmp_path / "out" / "frame_depth.npy")
    assert relative_difference(depth, estimators("packnet").infer(rgb)) <= PARITY


def _gpu_or_skip(module: str | None = None):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    if module is not None:
        pytest.importorskip(module, reason=f"{module} is not installed (pip install {module})")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_parity_speed_and_engine_cache(checkpoints, cache, precision):
    _gpu_or_skip("tensorrt")
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    reference = DepthEstimator.from_checkpoint(checkpoints["vits"], device="cuda")
    estimator = DepthEstimator.from_checkpoint(checkpoints["vits"], device="cuda", backend="tensorrt",
                                               precision=precision)
    assert estimator.backend.NAME == "tensorrt" and list((cache / "engines").glob(f"*_{precision}_trt*.engine"))
    assert relative_difference(estimator.infer(rgb), reference.infer(rgb)) <= TOLERANCES[precision]

    def seconds(e):
        e.infer(rgb)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            e.infer(rgb)
        torch.cuda.synchronize()
        return time.perf_counter() - start

    assert seconds(estimator) < seconds(reference)


def test_onnxruntime_cuda_parity(checkpoints):
    _gpu_or_skip("onnxruntime")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here (pip install onnxruntime-gpu)")
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    reference = DepthEstimator.from_checkpoint(checkpoints["vits"], device="cuda").infer(rgb)
    depth = DepthEstimator.from_checkpoint(checkpoints["vits"], device="cuda", backend="onnxruntime").infer(rgb)
    assert relative_difference(depth, reference) <= TOLERANCES["fp32"]


def test_tensorrt_without_gpu_is_refused_clearly(checkpoints):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: covered by the TensorRT tests")
    with pytest.raises(BackendError, match="backend tensorrt runs on cuda, not cpu"):
        DepthEstimator.from_checkpoint(checkpoints["packnet"], device="cpu", backend="tensorrt")


def test_cached_export_is_reused(checkpoints, cache, estimators):
    estimators("packnet", "onnxruntime")
    files = sorted((cache / "onnx").glob("*.onnx"))
    assert len(files) == 1 and files[0].name.endswith("_64x96.onnx")
    stamp = files[0].stat().st_mtime_ns
    DepthEstimator.from_checkpoint(checkpoints["packnet"], device="cpu", backend="openvino")
    assert files[0].stat().st_mtime_ns == stamp  # not exported again
