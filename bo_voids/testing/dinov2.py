"""A tiny randomly initialised DINOv2, saved the way users save real ones.

The tiny model needs no network and goes through exactly the loading code a user's weights
take (never a mock): a Hugging Face-format folder (:func:`make_tiny_dinov2`) or a ``torch.save``
state dict in either parameter layout (:func:`save_dinov2_state_dict`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

__all__ = ["TINY_DINOV2_CONFIG", "make_tiny_dinov2", "save_dinov2_state_dict"]

TINY_DINOV2_CONFIG: dict[str, int | float] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "mlp_ratio": 2,
    "image_size": 56,
    "patch_size": 14,
    "layerscale_value": 1.0,
}


def make_tiny_dinov2(folder: str | Path, *, seed: int = 0, **overrides: object) -> Path:
    """Save a tiny randomly initialised ``Dinov2Model`` as a Hugging Face-format folder.

    Args:
        folder: Destination folder (created). Holds ``config.json`` and ``model.safetensors``.
        seed: Torch seed of the random initialisation (different seeds give different weights).
        **overrides: ``Dinov2Config`` fields overriding :data:`TINY_DINOV2_CONFIG`.

    Returns:
        The folder, usable as ``DinoV2Embedder(weights=folder)`` or ``dino_weights: folder``.

    Example:
        >>> path = make_tiny_dinov2(tmp_path / "tiny")  # doctest: +SKIP
    """
    import torch
    from transformers import Dinov2Config, Dinov2Model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fields: dict[str, Any] = {**TINY_DINOV2_CONFIG, **overrides}  # Dinov2Config checks them
    cfg = Dinov2Config(**fields)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Dinov2Model(cfg)
        # Layer scale is initialised to a constant; randomise a little so layers matter.
        for name, p in model.named_parameters():
            if "lambda1" in name:
                p.data.uniform_(0.5, 1.5)
    model.eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder


def save_dinov2_state_dict(
    hf_folder: str | Path, path: str | Path, *, layout: str = "hf", with_config: bool = False
) -> Path:
    """Save the weights of a Hugging Face-format DINOv2 folder as a ``torch.save`` state dict.

    Args:
        hf_folder: Folder written by :func:`make_tiny_dinov2` (or any ``Dinov2Model`` folder).
        path: Destination ``.pth`` file.
        layout: ``"hf"`` (``transformers`` parameter names) or ``"original"``
            (facebookresearch/dinov2 names: ``blocks.0.attn.qkv.weight`` ...).
        with_config: Also copy ``config.json`` next to ``path`` (needed for non-standard sizes).

    Returns:
        ``path``.
    """
    import torch
    from transformers import Dinov2Model

    model = Dinov2Model.from_pretrained(str(hf_folder))
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if layout == "original":
        sd = _to_original_layout(sd)
    elif layout != "hf":
        raise ValueError(f"layout must be 'hf' or 'original', got {layout!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, str(path))
    if with_config:
        cfg = json.loads((Path(hf_folder) / "config.json").read_text())
        (path.parent / "config.json").write_text(json.dumps(cfg, indent=2))
    return path


def _to_original_layout(sd: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`bo_voids.embedding.dinov2.convert_original_state_dict` (current names)."""
    import torch

    top = {
        "embeddings.cls_token": "cls_token",
        "embeddings.mask_token": "mask_token",
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias",
    }
    sub = {
        "norm1": "norm1",
        "norm2": "norm2",
        "attention.o_proj": "attn.proj",
        "attention.output.dense": "attn.proj",
        "layer_scale1.lambda1": "ls1.gamma",
        "layer_scale2.lambda1": "ls2.gamma",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
    out: dict[str, Any] = {}
    qkv: dict[tuple[str, str], dict[str, Any]] = {}
    for key, val in sd.items():
        if key in top:
            out[top[key]] = val
            continue
        m = re.match(r"^encoder\.layer\.(\d+)\.(.+)$", key)
        if m is None:
            raise ValueError(f"unexpected key {key!r}")
        i, rest = m.groups()
        qm = re.match(
            r"^attention\.(?:attention\.)?(q_proj|k_proj|v_proj|query|key|value)\.(.+)$", rest
        )
        if qm:
            part = {"q_proj": "q", "query": "q", "k_proj": "k", "key": "k"}.get(qm.group(1), "v")
            qkv.setdefault((i, qm.group(2)), {})[part] = val
            continue
        if rest in sub:
            out[f"blocks.{i}.{sub[rest]}"] = val
            continue
        mod, _, kind = rest.rpartition(".")
        if mod not in sub:
            raise ValueError(f"unexpected key {key!r}")
        out[f"blocks.{i}.{sub[mod]}.{kind}"] = val
    for (i, kind), parts in qkv.items():
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out
