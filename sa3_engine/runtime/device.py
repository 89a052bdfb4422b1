"""Device, precision and dtype choice: CUDA -> MPS -> CPU; "fast" precision on CUDA and bfloat16 CPUs.

The official loader forces fp32 off CUDA (MPS and CPU run fp32). Here precision "auto" runs CUDA in half
precision as officially, a CPU with native bfloat16 matrix instructions in bfloat16 (``pick_precision``,
measured in docs/performance.md), and everything else in float32; "fp32" is the parity mode.
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


PRECISIONS = ("auto", "fp32", "fast")
PRECISION_HELP = ("fp32 (float32: the parity mode), fast (bfloat16 on CPU; float16 DiT on CUDA) or auto (the "
                  "default: fast on CUDA and on CPUs with native bfloat16, else fp32); --dtype and "
                  "--autoencoder-dtype override its choice")
COMPILE_HELP = ("torch.compile the DiT's blocks and the SAME decoder: faster steps and decoding after a one-time "
                "compilation on the first generation (needs a C++ compiler; see docs/performance.md)")
# "fast": (DiT and conditioner heads, SAME autoencoder) dtypes per device type. CPU: bfloat16 for both
# (measured in docs/performance.md); CUDA: the official model_half DiT with a float32 decoder; MPS: the
# same as CUDA, untested (no Mac here).
FAST_DTYPES = {"cpu": ("bfloat16", "bfloat16"), "cuda": ("float16", "float32"), "mps": ("float16", "float32")}


def native_bf16_cpu() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (AVX512-BF16 or AMX: Xeon since Cooper Lake,
    EPYC since Zen 4). Elsewhere bfloat16 is emulated and slower than float32."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def pick_precision(
    device: str, requested: str | None = None, dtype: str | None = None, autoencoder_dtype: str | None = None
) -> tuple[str, str]:
    """(DiT dtype, autoencoder dtype) names for a precision mode; explicit ``dtype``/``autoencoder_dtype`` win.

    "fp32": float32 everywhere (what ``sa3 parity`` checks, bit for bit). "fast": ``FAST_DTYPES`` for the
    device. None/"auto": "fast" on CUDA and on CPUs with native bfloat16, "fp32" elsewhere (MPS: the
    official loader runs it in float32). Name the result with :func:`precision_name`.
    """
    if requested not in (None, "", *PRECISIONS):
        raise ValueError(f"precision: {requested!r} is not one of {PRECISIONS}")
    kind = torch.device(device).type
    if requested in (None, "", "auto"):
        requested = "fast" if kind == "cuda" or (kind == "cpu" and native_bf16_cpu()) else "fp32"
    defaults = FAST_DTYPES[kind] if requested == "fast" else ("float32", "float32")
    chosen = (_dtype_name(dtype, "dtype") if dtype not in (None, "", "auto") else defaults[0],
              pick_autoencoder_dtype(autoencoder_dtype) if autoencoder_dtype not in (None, "", "auto") else defaults[1])
    if requested == "fp32" and chosen != ("float32", "float32"):
        raise ValueError(f"precision: 'fp32' runs float32 only, but dtype {chosen[0]} and autoencoder_dtype "
                         f"{chosen[1]} were asked for")
    return chosen


def precision_name(dtype: torch.dtype | str, autoencoder_dtype: torch.dtype | str) -> str:
    """What is reported (``hello``, ``status``, every result's ``params``): "fp32" when the DiT and the
    autoencoder are both float32, else "fast"."""
    names = {str(d).removeprefix("torch.") for d in (dtype, autoencoder_dtype)}
    return "fp32" if names == {"float32"} else "fast"


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
