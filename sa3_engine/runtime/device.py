"""Device and dtype choice: CUDA -> MPS -> CPU, half precision only on CUDA.

The official loader forces fp32 off CUDA (MPS and CPU run fp32), so "auto" does the same here.
CoreML is not a torch device: on macOS the DiT runs in CoreML when the model folder carries a fresh
export (``sa3 export-coreml``), the rest in torch on MPS or CPU (``coreml.select_dit``).
"""

from __future__ import annotations

import importlib.util
import sys

import torch

from sa3_engine.models.attention import backend

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_DTYPE_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


def pick_device(requested: str | None = None) -> str:
    """The torch device to run on: ``requested`` checked, or the best available for None/"auto".

    "coreml" (the DiT in CoreML) gives the torch device for everything else: MPS, else CPU.
    """
    if requested == "coreml":
        if not coreml_available():
            raise ValueError("device: 'coreml' needs macOS with coremltools (pip install 'sa3-daw[coreml]')")
        return "mps" if torch.backends.mps.is_available() else "cpu"
    if requested in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise ValueError(f"device: {requested!r} is not a torch device ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {requested!r} requested but CUDA is not available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device: {requested!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device: {requested!r} requested but MPS is not available")
    if device.type not in ("cuda", "mps", "cpu"):
        raise ValueError(f"device: {requested!r} is not supported (cuda, mps or cpu)")
    return str(device)


def _dtype_name(requested: str, name: str) -> str:
    canonical = _DTYPE_ALIASES.get(requested, requested)
    if canonical not in DTYPES:
        raise ValueError(f"{name}: {requested!r} is not one of {sorted(DTYPES)}")
    return canonical


def pick_dtype(device: str, requested: str | None = None) -> str:
    """The DiT's dtype name for ``device``: float16 on CUDA and float32 elsewhere for None/"auto"."""
    if requested in (None, "", "auto"):
        return "float16" if torch.device(device).type == "cuda" else "float32"
    return _dtype_name(requested, "dtype")


def pick_autoencoder_dtype(requested: str | None = None, field: str = "autoencoder_dtype") -> str:
    """The SAME autoencoder's dtype name: float32 for None/"auto", on every device (``field`` names the
    option in errors).

    The official optimised ports keep the decoder in float32 (the MLX port: SAME-S's differential
    attention cancels catastrophically in float16), and the autoencoder is small next to the DiT.
    """
    if requested in (None, "", "auto"):
        return "float32"
    return _dtype_name(requested, field)


def coreml_available() -> bool:
    """Whether this machine could run exported CoreML packages (macOS with coremltools installed)."""
    return sys.platform == "darwin" and importlib.util.find_spec("coremltools") is not None


def describe(device: str) -> dict:
    """What the engine reports about its device in ``hello`` and ``status``, the attention kernel included."""
    info: dict = {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
                  "coreml": coreml_available(), "attention": backend(device)}
    if torch.device(device).type == "cuda":
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        info.update(name=props.name, memory_bytes=int(props.total_memory))
    return info
