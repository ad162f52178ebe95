"""What trains and how fast: the training model, its parameter groups (full / head / norms+biases / LoRA), the
optimiser and the learning-rate schedule. Shared by the offline trainers and the online adaptation node.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace

import torch

from depth_ros.checkpoints import CheckpointError, CheckpointMetadata, build_model, load_checkpoint
from depth_ros.learning.config import ModelConfig, OptimConfig
from depth_ros.models import create_model

log = logging.getLogger(__name__)

# DINOv2 layers that get LoRA adapters: attention projections and the MLP (Hu et al., "LoRA", ICLR 2022, adapt the
# attention weights; adapting the MLP too is the common choice for ViTs)
LORA_TARGETS = ["qkv", "proj", "fc1", "fc2", "w12", "w3"]
NORM_TYPES = (torch.nn.LayerNorm, torch.nn.BatchNorm2d, torch.nn.GroupNorm)


def build_training_model(cfg: ModelConfig) -> torch.nn.Module:
    """A metric model of the registry (:func:`depth_ros.models.create_model`) initialised as ``cfg.init`` says.

    Raises:
        CheckpointError: the checkpoint is unreadable or does not fit the model.
        ValueError: ``init: encoder`` for an architecture without a pretrained encoder.
    """
    model = create_model(cfg_metadata(cfg))
    if cfg.init == "checkpoint":
        loaded, _ = build_model(cfg.checkpoint, encoder=cfg.encoder, max_depth=cfg.max_depth)
        state = loaded.state_dict()
        if cfg.uncertainty and loaded.sigma_head is None:  # adding a sigma head: it keeps its new weights
            log.info("%s has no sigma head: the new model's sigma head starts untrained", cfg.checkpoint)
            prefix = next(name for name, module in model.named_modules() if module is model.sigma_head) + "."
            state.update({k: v for k, v in model.state_dict().items() if k.startswith(prefix)})
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{cfg.checkpoint}: weights do not fit a {cfg.architecture} {cfg.encoder} model: "
                                  f"{str(exc).splitlines()[0]}") from None
    elif cfg.init == "encoder":
        if not hasattr(model, "pretrained"):
            raise ValueError(f"model.init: encoder needs an architecture with a pretrained encoder, not "
                             f"{cfg.architecture} (use checkpoint or random)")
        state, _ = load_checkpoint(cfg.checkpoint)
        encoder = {k.removeprefix("pretrained."): v for k, v in state.items() if k.startswith("pretrained.")}
        try:
            model.pretrained.load_state_dict(encoder, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{cfg.checkpoint}: encoder weights do not fit a {cfg.encoder} encoder: "
                                  f"{str(exc).splitlines()[1] if len(str(exc).splitlines()) > 1 else exc}") from None
    return model


def cfg_metadata(cfg: ModelConfig, input_size: int | None = None, train_focal_px: float | None = None):
    """The :class:`~depth_ros.checkpoints.CheckpointMetadata` of a metric model as ``cfg`` describes it."""
    return CheckpointMetadata(cfg.encoder, "metric", cfg.max_depth, input_size, train_focal_px,
                              architecture=cfg.architecture, uncertainty=cfg.uncertainty)


class ScaledDepth(torch.nn.Module):
    """A depth network whose every output (each scale of a multi-scale model) is multiplied by ``exp(log_scale)``,
    one learnable scalar: the ``scale`` parameter group, which corrects a global metric scale error (a camera or
    building the model's scale does not fit) and cannot change the structure of the depth maps.

    Saved checkpoints keep the weights as they are and record the factor as the metadata's ``scale``
    (:func:`deployable_metadata`), which :func:`depth_ros.published_depth.depth_factor` applies.

    Args:
        model: the network, (B, 3, H, W) -> (B, H, W) metres; it stays in eval mode.
        scale: starting factor (> 0).
    """

    def __init__(self, model: torch.nn.Module, scale: float = 1.0):
        super().__init__()
        self.model = model
        self.log_scale = torch.nn.Parameter(torch.tensor(float(scale)).log())

    def train(self, mode: bool = True) -> ScaledDepth:
        """The factor trains; the fixed network always runs as deployed (eval mode: what depth_node publishes)."""
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, x: torch.Tensor, with_sigma: bool = False):
        """The network's output times the factor; with ``with_sigma`` also its log sigma plus the log factor."""
        out = self.model(x, with_sigma=True) if with_sigma else self.model(x)
        depth, log_sigma = out if with_sigma else (out, None)
        factor = self.log_scale.exp()
        depth = [o * factor for o in depth] if isinstance(depth, list) else depth * factor
        return (depth, log_sigma + self.log_scale) if with_sigma else depth

    @property
    def scale(self) -> float:
        """The current factor."""
        return float(self.log_scale.detach().exp())


def _split(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(encoder, head) submodules of a Depth Anything V2 model; None for a network trained as one (PackNet)."""
    if hasattr(model, "pretrained") and hasattr(model, "depth_head"):
        return model.pretrained, model.depth_head
    return None


def prepare_trainable(model: torch.nn.Module, cfg: OptimConfig) -> tuple[torch.nn.Module, list[dict]]:
    """Freeze what ``cfg.trainable`` leaves fixed and return the model to train with its optimiser groups.

    Groups: encoder-side parameters at ``lr``, head-side parameters at ``lr * head_lr_factor`` (the Depth Anything V2
    recipe for ``full``); a model without that split (PackNet) trains as one group at ``lr``. ``head``: the decoder
    only; ``norms_biases``: LayerNorm/GroupNorm/BatchNorm weights and every bias (a few tenths of a percent of the
    weights; cheap and hard to over-fit, as in BitFit, Ben Zaken et al. 2022); ``lora``: peft LoRA adapters on
    :data:`LORA_TARGETS` of the encoder, head frozen (the returned model is then a peft model;
    :func:`deployable_state_dict` merges the adapters); ``scale``: every weight frozen, one global depth factor
    learnt (the returned model is a :class:`ScaledDepth`; :func:`deployable_metadata` records the factor as
    the metadata's ``scale``). The factor sees ``lr`` as a step in log scale: Adam moves it about ``lr``
    (relative) per step. ``uncertainty``: only the sigma head (``model.sigma_head``), one group at ``lr``.

    Returns:
        (model to optimise, AdamW parameter groups with ``lr`` set).

    Raises:
        ValueError: ``head`` or ``lora`` for a model without an encoder/head split, ``uncertainty`` for a model
            without a sigma head.
    """
    lr, head_lr = cfg.lr, cfg.lr * cfg.head_lr_factor
    split = _split(model)
    if split is None and cfg.trainable in ("head", "lora"):
        raise ValueError(f"optim.trainable: {cfg.trainable} needs a model with an encoder/head split (Depth Anything "
                         "V2); use full or norms_biases")
    if cfg.trainable == "lora":
        return _lora(model, split[0], cfg)
    if cfg.trainable == "scale":
        return _scale_only(model, lr)
    if cfg.trainable == "uncertainty":
        return _sigma_head_only(model, lr)
    if cfg.trainable == "full":
        chosen = {id(p) for p in model.parameters()}
    elif cfg.trainable == "head":
        chosen = {id(p) for p in split[1].parameters()}
    else:  # norms_biases
        chosen = {id(p) for module in model.modules() if isinstance(module, NORM_TYPES) for p in module.parameters()}
        chosen |= {id(p) for name, p in model.named_parameters() if name.endswith("bias")}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen)
    if split is None:  # one network, one learning rate
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    else:
        groups = [{"params": [p for p in split[0].parameters() if p.requires_grad], "lr": lr},
                  {"params": [p for p in split[1].parameters() if p.requires_grad], "lr": head_lr}]
    count = sum(p.numel() for g in groups for p in g["params"])
    log.info("training %s: %d of %d parameters", cfg.trainable, count, sum(p.numel() for p in model.parameters()))
    return model, [g for g in groups if g["params"]]


def _lora(model: torch.nn.Module, encoder: torch.nn.Module, cfg: OptimConfig) -> tuple[torch.nn.Module, list[dict]]:
    """peft LoRA adapters on the encoder's :data:`LORA_TARGETS` linear layers; one group at ``lr``."""
    from peft import LoraConfig, get_peft_model

    targets = [name for name, module in encoder.named_modules()
               if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in LORA_TARGETS]
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=[f"pretrained.{n}" for n in targets])
    model = get_peft_model(model, lora)
    return model, [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr}]


def _scale_only(model: torch.nn.Module, lr: float) -> tuple[torch.nn.Module, list[dict]]:
    """Every weight frozen; one global log-scale factor (:class:`ScaledDepth`) at ``lr``."""
    model.requires_grad_(False)
    model = ScaledDepth(model)
    log.info("training scale: 1 global depth factor, the %d weights fixed",
             sum(p.numel() for p in model.model.parameters()))
    return model, [{"params": [model.log_scale], "lr": lr}]


def _sigma_head_only(model: torch.nn.Module, lr: float) -> tuple[torch.nn.Module, list[dict]]:
    """Only ``model.sigma_head`` trains, at ``lr``. Raises ValueError for a model without one."""
    if getattr(model, "sigma_head", None) is None:
        raise ValueError("optim.trainable: uncertainty needs a model with a sigma head (model.uncertainty: true)")
    model.requires_grad_(False)
    params = list(model.sigma_head.parameters())
    for p in params:
        p.requires_grad_(True)
    trained = sum(p.numel() for p in params)
    log.info("training uncertainty: the sigma head's %d parameters, the other %d fixed", trained,
             sum(p.numel() for p in model.parameters()) - trained)
    return model, [{"params": params, "lr": lr}]


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` without compile/DDP wrappers."""
    module = getattr(model, "_orig_mod", model)
    return getattr(module, "module", module)


def deployable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights in the plain model layout (LoRA adapters merged into a copy; compile/DDP and
    :class:`ScaledDepth` wrappers removed: save them with :func:`deployable_metadata`)."""
    module = _unwrapped(model)
    module = module.model if isinstance(module, ScaledDepth) else module
    if hasattr(module, "merge_and_unload"):  # a peft model
        module = copy.deepcopy(module).merge_and_unload()
    return module.state_dict()


def deployable_metadata(model: torch.nn.Module, metadata: CheckpointMetadata) -> CheckpointMetadata:
    """The metadata to save :func:`deployable_state_dict` with: ``metadata``, with its ``scale`` times the learnt
    factor of a :class:`ScaledDepth` model (the same depth maps from the plain weights)."""
    module = _unwrapped(model)
    if not isinstance(module, ScaledDepth):
        return metadata
    return replace(metadata, scale=metadata.scale * module.scale)


def build_optimizer(groups: list[dict], cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW (weight decay ``cfg.weight_decay``) over the groups of :func:`prepare_trainable`."""
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    """Linear warm-up, then polynomial decay to 0 (Depth Anything V2) or cosine decay (transformers schedules)."""
    from transformers import get_scheduler

    if cfg.schedule == "poly":
        return get_scheduler("polynomial", optimizer, num_warmup_steps=cfg.warmup_steps,
                             num_training_steps=total_steps,
                             scheduler_specific_kwargs={"power": cfg.poly_power, "lr_end": 0.0})
    return get_scheduler("cosine", optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=total_steps)
