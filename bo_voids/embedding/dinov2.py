"""DINOv2 image embedder (pretrained ViT, CLS token) with offline-first weight loading.

Weights are looked for, in order: an explicit ``weights`` path (a Hugging Face-format folder, or a
``.pth`` / ``.pt`` / ``.safetensors`` state dict in Hugging Face or original facebookresearch key
layout), the local Hugging Face cache (``local_files_only=True``, no network), then, only when
``allow_network=True``, the Hugging Face hub (one attempt). ``source="hub"`` uses ``torch.hub`` as
in the original design instead.

Why the CLS token: DINOv2 is trained with a self-distillation loss on the CLS token (DINO head)
and its linear-probe / k-NN results, which is what an MMD between image sets relies on, are
reported on the CLS token after the final layer norm (``x_norm_clstoken`` in the official code,
``pooler_output`` in ``transformers.Dinov2Model``). It is a global, translation-robust summary of
the image, unlike mean-pooled patch tokens, which depend more on the background area.

Precision (``dtype="auto"``): on a GPU, half precision (bfloat16 where CUDA supports it, else
float16; float16 on MPS). On a CPU, bfloat16 when both hold:

1. the CPU multiplies bfloat16 natively, i.e. it is x86-64 with ``avx512_bf16`` or ``amx_bf16``
   (Intel Xeon Cooper Lake / Sapphire Rapids and later, AMD Zen 4 and later; read by
   :func:`cpu_bf16_support`) and PyTorch has oneDNN (``torch.backends.mkldnn``); without native
   support bfloat16 is emulated and slower than float32, and other architectures are not checked
   and keep float32;
2. on this model, the bfloat16 CLS embeddings of a few fixed synthetic probe images stay within
   cosine similarity :data:`BF16_MIN_COSINE` (0.999) of the float32 ones (checked once when the
   embedder is built, on a temporary bfloat16 copy of the model: about 0.3 s for ViT-S/14 and
   1 s for ViT-B/14 on 2 cores).

Otherwise float32. The chosen dtype is part of :meth:`DinoV2Embedder.fingerprint` (so an
experiment embedded in float32 is never resumed in bfloat16), and :meth:`DinoV2Embedder.describe`
says why it was chosen. Pass ``dtype="float32"`` to keep float32 everywhere.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from bo_voids._types import JsonObject
from bo_voids.embedding.base import Embedder, short_hash
from bo_voids.exceptions import EmbeddingError

if TYPE_CHECKING:
    import torch
    from transformers import Dinov2Config

__all__ = [
    "BF16_MIN_COSINE",
    "DINOV2_VARIANTS",
    "DinoOptions",
    "DinoV2Embedder",
    "DinoV2Variant",
    "convert_original_state_dict",
    "cpu_bf16_support",
    "dinov2_config",
    "hf_cache_dir",
    "resolve_device",
]

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Smallest per-image cosine similarity between bfloat16 and float32 CLS embeddings of the probe
#: images for ``dtype="auto"`` to run DINOv2 in bfloat16 on a CPU.
BF16_MIN_COSINE = 0.999

#: CPU flags (``/proc/cpuinfo``) that mean native bfloat16 dot products on x86-64.
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


class DinoOptions(TypedDict, total=False):
    """Further :class:`DinoV2Embedder` arguments that :func:`make_embedder` passes on."""

    crop_size: int
    resize_size: int | None
    batch_size: int
    cache_dir: str | os.PathLike[str] | None
    source: str


@dataclass(frozen=True)
class DinoV2Variant:
    """Architecture of one released DINOv2 backbone.

    Attributes:
        name: torch.hub name (``dinov2_vitb14``).
        hf_id: Hugging Face hub id (``facebook/dinov2-base``).
        hidden_size: Embedding width (= output dimension).
        num_layers: Transformer blocks.
        num_heads: Attention heads.
        swiglu: Whether the MLP is SwiGLU (only ViT-g/14).
    """

    name: str
    hf_id: str
    hidden_size: int
    num_layers: int
    num_heads: int
    swiglu: bool = False


DINOV2_VARIANTS: dict[str, DinoV2Variant] = {
    v.name: v
    for v in (
        DinoV2Variant("dinov2_vits14", "facebook/dinov2-small", 384, 12, 6),
        DinoV2Variant("dinov2_vitb14", "facebook/dinov2-base", 768, 12, 12),
        DinoV2Variant("dinov2_vitl14", "facebook/dinov2-large", 1024, 24, 16),
        DinoV2Variant("dinov2_vitg14", "facebook/dinov2-giant", 1536, 40, 24, swiglu=True),
    )
}


def dinov2_config(variant: str) -> Dinov2Config:
    """Return the ``transformers.Dinov2Config`` of a released variant, without any download.

    Args:
        variant: One of :data:`DINOV2_VARIANTS` (``"dinov2_vits14"`` ...).

    Returns:
        A ``Dinov2Config`` matching ``facebook/dinov2-*`` (patch 14, 518 px position grid,
        MLP ratio 4, layer scale).

    Raises:
        EmbeddingError: If the variant is unknown.
    """
    from transformers import Dinov2Config

    v = _variant(variant)
    return Dinov2Config(
        hidden_size=v.hidden_size,
        num_hidden_layers=v.num_layers,
        num_attention_heads=v.num_heads,
        mlp_ratio=4,
        image_size=518,
        patch_size=14,
        layerscale_value=1.0,
        use_swiglu_ffn=v.swiglu,
        layer_norm_eps=1e-6,
    )


def resolve_device(device: str = "auto") -> str:
    """Resolve ``"auto"`` to ``cuda`` → ``mps`` → ``cpu``; pass other names through."""
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def hf_cache_dir() -> Path:
    """Return the Hugging Face hub cache folder, read from the environment at call time.

    ``HF_HUB_CACHE`` (or legacy ``HUGGINGFACE_HUB_CACHE``) wins, then ``$HF_HOME/hub``, then
    ``$XDG_CACHE_HOME/huggingface/hub``, then ``~/.cache/huggingface/hub``.
    """
    env = os.environ
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(key):
            return Path(env[key]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def cpu_bf16_support() -> tuple[bool, str]:
    """Whether this CPU computes bfloat16 matrix products natively (fast), and why.

    The rule: x86-64 with the ``avx512_bf16`` or ``amx_bf16`` instruction set extension, read
    from the ``flags`` line of ``/proc/cpuinfo`` (elsewhere, where that file is missing, from
    PyTorch's own CPU probes ``torch.cpu._is_avx512_bf16_supported`` /
    ``_is_amx_tile_supported``), and a PyTorch with oneDNN, which provides the bfloat16 kernels.
    ``torch.backends.cpu.get_cpu_capability()`` is not enough: it reports ``"AVX512"`` on
    AVX-512 CPUs with and without bfloat16. Other architectures report ``False`` (not checked).

    Returns:
        ``(supported, reason)``; ``reason`` is a short human-readable explanation, recorded in
        :meth:`DinoV2Embedder.describe`.
    """
    import torch

    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return False, f"{machine or 'unknown'} CPU: native bfloat16 not checked"
    if not torch.backends.mkldnn.is_available():
        return False, "PyTorch built without oneDNN (no fast bfloat16 CPU kernels)"
    flags = _cpuinfo_flags()
    if flags:
        found = [f for f in _CPU_BF16_FLAGS if f in flags]
    else:
        found = []
        for label, fn_name in (
            ("avx512_bf16", "_is_avx512_bf16_supported"),
            ("amx", "_is_amx_tile_supported"),
        ):
            fn = getattr(torch.cpu, fn_name, None)
            try:
                if fn is not None and fn():
                    found.append(label)
            except Exception:  # pragma: no cover - private PyTorch helpers, defensive
                continue
    if found:
        return True, f"CPU has {' + '.join(found)}"
    return False, "CPU lacks avx512_bf16 / amx_bf16 (bfloat16 would be emulated)"


def _cpuinfo_flags() -> set[str]:
    """The ``flags`` of the first CPU in ``/proc/cpuinfo`` (empty where it is not readable)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) forbids network access."""
    return any(
        os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


class DinoV2Embedder(Embedder):
    """DINOv2 CLS-token embeddings of grayscale images.

    Preprocessing follows the DINOv2 evaluation transform: grayscale is replicated to 3 channels,
    the shorter side is resized to ``resize_size`` (bicubic, antialiased), a centre crop of
    ``crop_size`` (a multiple of the 14 px patch) is taken, and the ImageNet mean/std applied.

    Args:
        model: Variant name, one of :data:`DINOV2_VARIANTS`.
        weights: Optional local weights: a Hugging Face-format folder (``config.json`` +
            ``model.safetensors`` / ``pytorch_model.bin``) or a state-dict file (``.pth``,
            ``.pt``, ``.bin``, ``.safetensors``; Hugging Face or facebookresearch key layout),
            or an already built ``transformers.Dinov2Model`` (e.g. randomly initialised from
            :func:`dinov2_config` for benchmarks).
        device: ``"auto"`` (``cuda`` → ``mps`` → ``cpu``) or a torch device string.
        dtype: ``"auto"``, ``"float32"``, ``"bfloat16"`` or ``"float16"``. ``"auto"``: half
            precision on GPU; on CPU bfloat16 where the CPU supports it natively and this
            model's bfloat16 embeddings of the probe images stay within cosine
            :data:`BF16_MIN_COSINE` of float32, float32 otherwise (the rule is in the module
            docstring; :attr:`dtype_reason` says which case applied).
        crop_size: Side of the centre crop fed to the ViT; a multiple of 14.
        resize_size: Shorter side before cropping (default ``round(crop_size * 256 / 224)``).
        batch_size: Default images per forward pass.
        allow_network: Allow one download attempt from the Hugging Face hub when neither
            ``weights`` nor the cache has the model (ignored when ``HF_HUB_OFFLINE=1``).
        cache_dir: Hugging Face hub cache (default: :func:`hf_cache_dir`).
        source: ``"hf"`` (``transformers``) or ``"hub"`` (``torch.hub.load`` of
            ``facebookresearch/dinov2``, needs network or a populated torch hub cache).

    Raises:
        EmbeddingError: If the weights cannot be found or loaded; the message lists where it
            looked and how to provide the weights.

    Example:
        >>> emb = DinoV2Embedder("dinov2_vits14", weights="~/models/dinov2-small")  # doctest: +SKIP
        >>> emb.embed([np.random.rand(256, 256)]).shape  # doctest: +SKIP
        (1, 384)
    """

    name = "dinov2"

    def __init__(
        self,
        model: str = "dinov2_vitb14",
        *,
        weights: str | os.PathLike[str] | torch.nn.Module | None = None,
        device: str = "auto",
        dtype: str = "auto",
        crop_size: int = 224,
        resize_size: int | None = None,
        batch_size: int = 16,
        allow_network: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        source: str = "hf",
    ) -> None:
        import torch

        self.variant = _variant(model)
        if crop_size <= 0 or crop_size % 14:
            raise EmbeddingError(f"crop_size must be a positive multiple of 14, got {crop_size}")
        self.crop_size = int(crop_size)
        self.resize_size = int(resize_size or round(crop_size * 256 / 224))
        if self.resize_size < self.crop_size:
            raise EmbeddingError(
                f"resize_size ({self.resize_size}) must be >= crop_size ({self.crop_size})"
            )
        if source not in ("hf", "hub"):
            raise EmbeddingError(f"source must be 'hf' or 'hub', got {source!r}")
        self.device = resolve_device(device)
        self.dtype_requested = dtype
        self.dtype_name, self.dtype_reason = _resolve_dtype(dtype, self.device)
        #: Smallest bfloat16-vs-float32 cosine of the probe images (``None`` when not probed).
        self.bf16_probe_cosine: float | None = None
        self.default_batch_size = int(batch_size)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else hf_cache_dir()

        if isinstance(weights, torch.nn.Module):
            model_obj, self.weight_source = weights, f"module:{type(weights).__name__}"
            self._hub = not hasattr(weights, "config")
        elif source == "hub":
            model_obj, self.weight_source = self._load_hub(allow_network)
            self._hub = True
        else:
            model_obj, self.weight_source = self._load_hf(weights, allow_network)
            self._hub = False
        model_obj.eval()
        self.weights_hash = _state_dict_hash(model_obj)
        loaded: Any = model_obj  # a transformers Dinov2Model (config) or a hub model (embed_dim)
        self.dim = int(loaded.config.hidden_size if not self._hub else loaded.embed_dim)
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
        self._mean, self._std = mean.to(self.device), std.to(self.device)
        if self.dtype_name == _PROBE_BF16:
            self.model = self._choose_cpu_dtype(model_obj)
        else:
            self.model = model_obj.to(device=self.device, dtype=getattr(torch, self.dtype_name))
        self.torch_dtype = getattr(torch, self.dtype_name)

    # ------------------------------------------------------------------ public API

    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """Turn validated images into a normalised `B x 3 x crop x crop` float32 tensor."""
        import torch
        import torch.nn.functional as F

        out = []
        for img in images:
            t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
            t = t.unsqueeze(0).expand(3, -1, -1) if t.ndim == 2 else t.permute(2, 0, 1)
            t = t.unsqueeze(0).to(self.device)
            h, w = t.shape[-2:]
            scale = self.resize_size / min(h, w)
            size = (max(self.crop_size, round(h * scale)), max(self.crop_size, round(w * scale)))
            if size != (h, w):
                t = F.interpolate(t, size=size, mode="bicubic", align_corners=False, antialias=True)
            top = (size[0] - self.crop_size) // 2
            left = (size[1] - self.crop_size) // 2
            t = t[..., top : top + self.crop_size, left : left + self.crop_size]
            # Out of place: without a resize ``t`` is still an expanded (shared-memory) view.
            out.append(t.clamp(0.0, 1.0))
        batch = torch.cat(out, dim=0)
        return (batch - self._mean) / self._std

    def _embed_batch(self, images: list[np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self._forward(self.model, self.preprocess(images).to(self.torch_dtype))

    def _forward(self, model: Any, x: Any) -> np.ndarray:
        """CLS embeddings of a preprocessed batch as float32 numpy (call in inference mode)."""
        cls = model(x) if self._hub else model(pixel_values=x).pooler_output
        return cls.float().cpu().numpy()

    def _choose_cpu_dtype(self, model: Any) -> Any:
        """Apply the CPU half of the ``dtype="auto"`` rule; return the model in the chosen dtype.

        Embeds the probe images with the float32 model and with a bfloat16 copy; keeps the copy
        when every image's cosine similarity is at least :data:`BF16_MIN_COSINE`, else the
        float32 model. Sets :attr:`dtype_name`, :attr:`dtype_reason` and
        :attr:`bf16_probe_cosine`.
        """
        import torch

        t0 = time.perf_counter()
        model = model.to(device=self.device, dtype=torch.float32)
        with torch.inference_mode():
            x = self.preprocess(_probe_images())
            ref = self._forward(model, x)
            low = copy.deepcopy(model).to(dtype=torch.bfloat16)
            out = self._forward(low, x.to(torch.bfloat16))
        cos = float(_row_cosine(ref, out).min())
        self.bf16_probe_cosine = cos
        keep = bool(np.isfinite(cos) and cos >= BF16_MIN_COSINE)
        self.dtype_name = "bfloat16" if keep else "float32"
        verdict = ">=" if keep else "<"
        self.dtype_reason = (
            f"auto on cpu: {self.dtype_reason}; bfloat16 probe cosine {cos:.6f} {verdict} "
            f"{BF16_MIN_COSINE} -> {self.dtype_name}"
        )
        logger.debug("%s (probe %.2f s)", self.dtype_reason, time.perf_counter() - t0)
        if keep:
            return low
        del low
        return model

    def fingerprint(self) -> str:
        """Return ``dinov2:<variant>:<source>:w=<hash>:<preprocessing>:<dtype>``."""
        settings = short_hash([self.crop_size, self.resize_size, IMAGENET_MEAN, IMAGENET_STD], 8)
        return (
            f"dinov2:{self.variant.name}:{self.weight_source}:w={self.weights_hash}"
            f":cls:crop{self.crop_size}-resize{self.resize_size}-{settings}:{self.dtype_name}"
        )

    def describe(self) -> JsonObject:
        """Return the embedder's identity and settings for ``experiment.json``."""
        return {
            "name": self.name,
            "variant": self.variant.name,
            "hf_id": self.variant.hf_id,
            "dim": self.dim,
            "weight_source": self.weight_source,
            "weights_sha256_16": self.weights_hash,
            "pooling": "cls (pooler_output, after final layernorm)",
            "crop_size": self.crop_size,
            "resize_size": self.resize_size,
            "normalisation": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
            "device": self.device,
            "dtype": self.dtype_name,
            "dtype_requested": self.dtype_requested,
            "dtype_reason": self.dtype_reason,
            "bf16_probe_min_cosine": self.bf16_probe_cosine,
            "fingerprint": self.fingerprint(),
        }

    # ------------------------------------------------------------------ loading

    def _load_hf(self, weights: Any, allow_network: bool) -> tuple[Any, str]:
        from transformers import Dinov2Model

        v = self.variant
        tried: list[str] = []
        if weights is not None:
            path = Path(weights).expanduser().resolve()
            if path.is_dir():
                if not (path / "config.json").is_file():
                    raise EmbeddingError(
                        f"DINOv2 weights folder {path} has no config.json; expected a Hugging "
                        f"Face-format folder (config.json + model.safetensors), e.g. from "
                        f"`huggingface-cli download {v.hf_id} --local-dir {path}`"
                    )
                try:
                    m = Dinov2Model.from_pretrained(str(path), local_files_only=True)
                except Exception as exc:
                    raise EmbeddingError(f"cannot load DINOv2 from folder {path}: {exc}") from exc
                return m, f"path:{path.name}"
            if path.is_file():
                return _load_state_dict_file(path, v), f"file:{path.name}"
            raise EmbeddingError(
                f"DINOv2 weights path {path} does not exist. Give a Hugging Face-format folder "
                f"(`huggingface-cli download {v.hf_id} --local-dir DIR`) or a .pth state dict."
            )
        tried.append(f"Hugging Face cache {self.cache_dir} (local_files_only)")
        try:
            m = Dinov2Model.from_pretrained(
                v.hf_id, cache_dir=str(self.cache_dir), local_files_only=True
            )
            return m, f"hf-cache:{v.hf_id}"
        except Exception as exc:  # OSError / EnvironmentError when absent
            logger.debug("DINOv2 not in HF cache: %s", exc)
        offline = hub_offline()
        if allow_network and not offline:
            tried.append(f"Hugging Face hub {v.hf_id} (one attempt)")
            try:
                m = Dinov2Model.from_pretrained(v.hf_id, cache_dir=str(self.cache_dir))
                return m, f"hf-hub:{v.hf_id}"
            except Exception as exc:
                logger.debug("DINOv2 download failed: %s", exc)
                net_note = f"download failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        elif allow_network:
            net_note = "network not tried: HF_HUB_OFFLINE=1"
        else:
            net_note = "network not tried (offline-first; allow it with embedder: dinov2)"
        raise EmbeddingError(
            f"DINOv2 weights for {v.name} ({v.hf_id}) not found. Looked in: "
            + "; ".join(tried)
            + f"; {net_note}. To use DINOv2 offline, on a machine with internet run "
            f"`huggingface-cli download {v.hf_id}` (then copy {self.cache_dir} over, or set "
            f"HF_HUB_CACHE), or download to a folder and pass `dino_weights: PATH` "
            f"(`huggingface-cli download {v.hf_id} --local-dir PATH`). Or use the offline "
            f"`embedder: handcrafted`."
        )

    def _load_hub(self, allow_network: bool) -> tuple[Any, str]:
        import torch

        try:
            m = torch.hub.load(
                "facebookresearch/dinov2", self.variant.name, skip_validation=not allow_network
            )
        except Exception as exc:
            raise EmbeddingError(
                f"torch.hub.load('facebookresearch/dinov2', {self.variant.name!r}) failed: {exc}. "
                "Use source='hf' with a local folder or the Hugging Face cache instead."
            ) from exc
        return m, f"torch-hub:{self.variant.name}"


# ---------------------------------------------------------------------- private helpers


def _variant(name: str) -> DinoV2Variant:
    try:
        return DINOV2_VARIANTS[name]
    except KeyError:
        raise EmbeddingError(
            f"unknown DINOv2 variant {name!r}; expected one of {sorted(DINOV2_VARIANTS)}"
        ) from None


#: Placeholder dtype of :func:`_resolve_dtype`: "bfloat16 if the probe agrees, else float32".
_PROBE_BF16 = "probe-bfloat16"


def _resolve_dtype(dtype: str, device: str) -> tuple[str, str]:
    """Resolve the ``dtype`` argument before the model is loaded.

    Returns:
        ``(dtype_name, reason)``; ``dtype_name`` is :data:`_PROBE_BF16` when the CPU supports
        bfloat16 natively and the probe (which needs the model) decides.
    """
    import torch

    allowed = ("auto", "float32", "bfloat16", "float16")
    if dtype not in allowed:
        raise EmbeddingError(f"dtype must be one of {allowed}, got {dtype!r}")
    if dtype != "auto":
        return dtype, "requested"
    if device.startswith("cuda"):
        if torch.cuda.is_bf16_supported():
            return "bfloat16", "auto on cuda: bfloat16 supported"
        return "float16", "auto on cuda: no bfloat16, float16"
    if device.startswith("mps"):
        return "float16", "auto on mps: float16"
    if device.startswith("cpu"):
        ok, why = cpu_bf16_support()
        if ok:
            return _PROBE_BF16, why
        return "float32", f"auto on cpu: {why} -> float32"
    return "float32", f"auto on {device}: float32"


def _probe_images(n: int = 4, size: int = 128) -> list[np.ndarray]:
    """Fixed synthetic X-ray-like probe images (smooth background, dark discs, noise) in [0, 1]."""
    g = np.random.default_rng(20_240_611)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    images = []
    for _ in range(n):
        fx, fy, phase = g.uniform(0.5, 2.0), g.uniform(0.5, 2.0), g.uniform(0, 2 * np.pi)
        img = 0.55 + 0.15 * np.sin(2 * np.pi * (fx * xx + fy * yy) + phase)
        for _ in range(int(g.integers(3, 9))):
            cy, cx = g.uniform(0.2, 0.8, size=2)
            r = g.uniform(0.03, 0.12)
            img = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, img * g.uniform(0.3, 0.8), img)
        img = img + 0.03 * g.standard_normal((size, size))
        images.append(np.clip(img, 0.0, 1.0).astype(np.float32))
    return images


def _row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of matching rows of two ``n x d`` arrays (float64)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    denom = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return (a64 * b64).sum(1) / np.maximum(denom, 1e-300)


def _state_dict_hash(model: Any) -> str:
    """SHA-256 (16 hex digits) over parameter names, shapes and float32 bytes."""
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().float().cpu().contiguous()
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


_ORIG_BLOCK = re.compile(r"^blocks\.(?:\d+\.)?(\d+)\.(.+)$")


def convert_original_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a facebookresearch/dinov2 state dict to Hugging Face (``transformers`` 4.x) keys.

    Keys already in Hugging Face layout pass through unchanged; ``transformers`` maps 4.x names
    to its current ones on load.

    Args:
        sd: Mapping of parameter name to tensor (``cls_token``, ``blocks.0.attn.qkv.weight`` ...).

    Returns:
        A new mapping with Hugging Face ``Dinov2Model`` names; fused ``qkv`` is split.

    Raises:
        EmbeddingError: On keys that cannot be mapped (e.g. register tokens).
    """
    if not any(k.startswith(("blocks.", "patch_embed.", "pos_embed")) for k in sd):
        return dict(sd)
    top = {
        "cls_token": "embeddings.cls_token",
        "mask_token": "embeddings.mask_token",
        "pos_embed": "embeddings.position_embeddings",
        "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
        "norm.weight": "layernorm.weight",
        "norm.bias": "layernorm.bias",
    }
    sub = {
        "norm1": "norm1",
        "norm2": "norm2",
        "attn.proj": "attention.output.dense",
        "ls1.gamma": "layer_scale1.lambda1",
        "ls2.gamma": "layer_scale2.lambda1",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
        "mlp.w12": "mlp.weights_in",
        "mlp.w3": "mlp.weights_out",
    }
    out: dict[str, Any] = {}
    for key, val in sd.items():
        if key in top:
            out[top[key]] = val
            continue
        m = _ORIG_BLOCK.match(key)
        if m is None:
            if key.startswith("head"):
                continue
            raise EmbeddingError(f"cannot map DINOv2 state-dict key {key!r} to Hugging Face layout")
        i, rest = m.group(1), m.group(2)
        prefix = f"encoder.layer.{i}."
        if rest.startswith("attn.qkv."):
            kind = rest.rsplit(".", 1)[1]
            q, k, v = val.chunk(3, dim=0)
            for name, part in (("query", q), ("key", k), ("value", v)):
                out[f"{prefix}attention.attention.{name}.{kind}"] = part.clone()
            continue
        mod, _, kind = rest.rpartition(".")
        if rest in sub:  # ls1.gamma style
            out[prefix + sub[rest]] = val
        elif mod in sub:
            out[f"{prefix}{sub[mod]}.{kind}"] = val
        else:
            raise EmbeddingError(f"cannot map DINOv2 state-dict key {key!r} to Hugging Face layout")
    return out


def _load_state_dict_file(path: Path, v: DinoV2Variant) -> Any:
    import torch
    from transformers import Dinov2Config, Dinov2Model

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EmbeddingError(f"cannot read DINOv2 state dict {path}: {exc}") from exc
    for wrapper in ("model", "state_dict", "teacher"):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict):
        raise EmbeddingError(f"{path} does not hold a state dict (got {type(sd).__name__})")
    sd = {re.sub(r"^(module\.|backbone\.|dinov2\.)+", "", k): t for k, t in sd.items()}
    sd = convert_original_state_dict(sd)
    cfg_file = path.parent / "config.json"
    config = Dinov2Config.from_pretrained(str(path.parent)) if cfg_file.is_file() else None
    if config is None:
        config = dinov2_config(v.name)
    pos = sd.get("embeddings.position_embeddings")
    if pos is not None:
        side = round((pos.shape[1] - 1) ** 0.5)
        config.image_size = side * config.patch_size
    cls_tok = sd.get("embeddings.cls_token")
    layer_ids = {int(m.group(1)) for k in sd if (m := re.match(r"encoder\.layer\.(\d+)\.", k))}
    got = (
        int(cls_tok.shape[-1]) if cls_tok is not None else None,
        max(layer_ids) + 1 if layer_ids else None,
    )
    if got != (config.hidden_size, config.num_hidden_layers):
        raise EmbeddingError(
            f"state dict {path} does not match DINOv2 {v.name}: it has hidden size {got[0]} and "
            f"{got[1]} layers, the config expects {config.hidden_size} and "
            f"{config.num_hidden_layers}. Pass the matching `dino_model`, or put the model's "
            "config.json next to the file."
        )
    try:
        loaded: Any = Dinov2Model.from_pretrained(
            None, config=config, state_dict=sd, output_loading_info=True
        )
        model, info = loaded
    except Exception as exc:
        raise EmbeddingError(f"cannot load DINOv2 state dict {path}: {exc}") from exc
    missing = [k for k in info.get("missing_keys", []) if "mask_token" not in k]
    unexpected = list(info.get("unexpected_keys", []))
    mismatched = list(info.get("mismatched_keys", []))
    if missing or mismatched:
        raise EmbeddingError(
            f"state dict {path} does not match DINOv2 {v.name} (hidden {config.hidden_size}, "
            f"{config.num_hidden_layers} layers): missing {missing[:5]}, mismatched "
            f"{mismatched[:5]}, unexpected {unexpected[:5]}. Pass the matching `dino_model`, or "
            "put the model's config.json next to the file."
        )
    return model
