"""CoreML for the DiT: ``sa3 export-coreml`` converts on any machine, :class:`CoreMLDiT` runs it on macOS.

Only the DiT is converted. It is the hot path: it runs at every sampler step (8 for the distilled models,
50 with a doubled batch for base models with CFG), while the text encoder and the conditioner heads run once
per request and SAME once per window. Those stay in torch (MPS or CPU), so the export is one function with
plain tensor inputs, and the text encoder keeps its exact float32 numerics.

The export is the DiT forward ``v = dit(x, t, cross, global_, local, padding_mask)`` in true-masking mode
("mask"), traced with ``torch.jit.trace`` and converted to an ML program:

- batch 1, a flexible latent length (``RangeDim``, 1 to the model's longest window); :class:`CoreMLDiT`
  runs a batch item by item, which gives the same result because under true masking items never interact;
- inputs and output float32 whatever the precision; the padding mask is a float input (1 = valid frame);
- ``fp16``: weights and compute in float16, except the ops feeding ``sin``/``cos`` (the timestep's
  Fourier features reach ~6e4 rad and RoPE angles ~1e3 rad, both meaningless in float16), kept float32.

``<model dir>/coreml/`` holds ``dit.mlpackage`` and ``dit.json``, a manifest naming what it was made from
(config hash, weights size and mtime) and how; a folder whose manifest no longer matches the model is
stale: it is ignored with a warning. The folder is replaced as a whole, so it is absent or complete.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .config import CONFIG_FILENAME, load_config
from .device import coreml_available
from .models import WEIGHTS_FILENAME

log = logging.getLogger("sa3.coreml")

EXPORT_DIR = "coreml"
PACKAGE_NAME = "dit.mlpackage"
MANIFEST_NAME = "dit.json"
MANIFEST_FORMAT = 1
PRECISIONS = ("fp16", "fp32")
# The first macOS with the fused scaled_dot_product_attention op; older targets get it decomposed.
DEPLOYMENT_TARGET = "macOS15"
# Input names in call order (those the model has), then the output; "frames" marks the flexible axis.
INPUT_NAMES = ("x", "t", "cross_attn_cond", "global_cond", "local_add_cond", "padding_mask")
OUTPUT_NAME = "v"
FRAMES = "frames"
_LATENT_INPUTS = ("x", "local_add_cond", "padding_mask")
_TRIG_OPS = ("sin", "cos")


class CoreMLError(ValueError):
    """CoreML asked for where it cannot be made or used (the message says why and what to do)."""


# --------------------------------------------------------------------------------------------- manifest


def export_dir(model_dir: str | os.PathLike) -> Path:
    return Path(model_dir) / EXPORT_DIR


def config_hash(config: dict) -> str:
    """sha256 of the config as canonical JSON (key order and whitespace do not count)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def weights_identity(model_dir: str | os.PathLike) -> dict:
    """Size and mtime of the model's weights file: a re-download or a fine-tune changes them."""
    stat = (Path(model_dir) / WEIGHTS_FILENAME).stat()
    return {"file": WEIGHTS_FILENAME, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def read_manifest(model_dir: str | os.PathLike) -> dict | None:
    """The export's manifest, or None when there is no complete export."""
    folder = export_dir(model_dir)
    if not (folder / PACKAGE_NAME).is_dir():
        return None
    try:
        return json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def stale_reason(model_dir: str | os.PathLike, manifest: dict) -> str | None:
    """Why the export no longer matches the model folder, or None when it is fresh."""
    if manifest.get("format") != MANIFEST_FORMAT:
        return f"manifest format {manifest.get('format')!r} (expected {MANIFEST_FORMAT})"
    if manifest.get("config_sha256") != config_hash(load_config(Path(model_dir) / CONFIG_FILENAME)):
        return f"{CONFIG_FILENAME} changed"
    if manifest.get("weights") != weights_identity(model_dir):
        return f"{WEIGHTS_FILENAME} changed (size or modification time)"
    return None


def find_export(model_dir: str | os.PathLike) -> Path | None:
    """The fresh ``dit.mlpackage`` of ``model_dir``; a stale one is ignored with a warning."""
    manifest = read_manifest(model_dir)
    if manifest is None:
        return None
    reason = stale_reason(model_dir, manifest)
    if reason is not None:
        warnings.warn(f"ignoring the CoreML export in {export_dir(model_dir)}: {reason} since it was made; "
                      f"run `sa3 export-coreml {model_dir}` again", stacklevel=2)
        return None
    return export_dir(model_dir) / PACKAGE_NAME


# --------------------------------------------------------------------------------------------- export


def _coremltools():
    try:
        import coremltools
    except ImportError:
        raise CoreMLError("coremltools is not installed: pip install 'sa3-daw[coreml]'") from None
    return coremltools


class _ExportedDiT(nn.Module):
    """The DiT with positional tensor inputs (the ones the model has) and a float padding mask."""

    def __init__(self, dit: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.dit, self.names = dit, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        given = dict(zip(self.names, inputs, strict=True))
        return self.dit(
            given["x"], given["t"], given.get("cross_attn_cond"), given.get("global_cond"),
            given.get("local_add_cond"), given["padding_mask"] > 0.5, padding_mode="mask",
        )


def example_inputs(model, frames: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Inputs shaped as the pipeline builds them (conditioning through the real heads), batch 1."""
    from .conditioners import TEXT_ENCODER_DIMS
    from .pipeline import Pipeline

    pipe = Pipeline(model)
    head = model.conditioner.conditioners[pipe.text_id]
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(1, head.max_length, TEXT_ENCODER_DIMS[head.model_name], generator=generator)
    text_mask = torch.arange(head.max_length)[None] < max(1, head.max_length // 2)
    channels = model.io_channels
    mask = (torch.arange(frames) < frames // 2).float()[None, None]  # keep the first half, regenerate the rest
    source = torch.randn(1, channels, frames, generator=generator)
    valid = max(1, frames - frames // 4)  # the last quarter is padding
    seconds = valid * pipe.geometry.ratio / pipe.sample_rate
    with torch.no_grad():
        cond = pipe.condition((hidden, text_mask.long()), [seconds], mask, source * mask)
    inputs = {
        "x": torch.randn(1, channels, frames, generator=generator),
        "t": torch.rand(1, generator=generator),
        "cross_attn_cond": cond.cross_attn_cond,
        "global_cond": cond.global_cond,
        "local_add_cond": cond.local_add_cond,
        "padding_mask": (torch.arange(frames) < valid).float()[None],
    }
    return {name: value.float() for name, value in inputs.items() if value is not None}


def max_frames_of(model) -> int:
    """The longest window of ``model``, in latent frames."""
    from .pipeline import Geometry

    geometry = Geometry.of(model)
    return geometry.frames(geometry.max_samples)


def input_shapes(inputs: dict[str, torch.Tensor]) -> list[dict]:
    """Name and shape of each input, the latent axis (last of x, local_add_cond, padding_mask) as "frames"."""
    return [{"name": name, "shape": [*tensor.shape[:-1], FRAMES if name in _LATENT_INPUTS else tensor.shape[-1]]}
            for name, tensor in inputs.items()]


def trace_dit(model, frames: int) -> tuple[torch.jit.ScriptModule, dict[str, torch.Tensor]]:
    """``model``'s DiT traced on example inputs of ``frames`` latent frames, and those inputs."""
    inputs = example_inputs(model, frames)
    wrapper = _ExportedDiT(model.dit, tuple(inputs)).eval()
    with torch.no_grad(), warnings.catch_warnings():
        # The DiT's argument checks become constants in the trace; the lengths stay symbolic (tested).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # torch.jit.trace is deprecated, but coremltools 9 cannot convert torch.export's program of this DiT
        warnings.filterwarnings("ignore", "`torch.jit.trace", DeprecationWarning)
        return torch.jit.trace(wrapper, tuple(inputs.values())), inputs


def convert_dit(model, *, max_frames: int | None = None, precision: str = "fp16", trace_frames: int = 8):
    """``model``'s DiT as a coremltools ``MLModel`` (an ML program) and the manifest fields describing it."""
    ct = _coremltools()
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    longest = max_frames_of(model)
    max_frames = longest if max_frames is None else max_frames
    if not isinstance(max_frames, int) or not 1 <= max_frames <= longest:
        raise ValueError(f"max_frames: expected an integer in [1, {longest}] (the model's longest window), "
                         f"got {max_frames!r}")
    trace_frames = min(trace_frames, max_frames)
    traced, inputs = trace_dit(model, trace_frames)
    shapes = input_shapes(inputs)
    frames = ct.RangeDim(lower_bound=1, upper_bound=max_frames, default=trace_frames, symbol=FRAMES)
    tensor_types = [
        ct.TensorType(name=s["name"], shape=[frames if d == FRAMES else d for d in s["shape"]], dtype=np.float32)
        for s in shapes
    ]
    compute = ct.precision.FLOAT32
    if precision == "fp16":
        compute = ct.transform.FP16ComputePrecision(op_selector=_Float16Ops())
    with _converter_fixes(ct):
        mlmodel = ct.convert(
            traced, inputs=tensor_types, outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
            convert_to="mlprogram", compute_precision=compute,
            minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET), skip_model_load=True,
        )
    fields = {
        "inputs": shapes,
        "output": {"name": OUTPUT_NAME, "shape": [1, model.io_channels, FRAMES]},
        "frames": [1, max_frames],
        "batch": 1,
        "precision": precision,
        "padding_mode": "mask",
        "minimum_deployment_target": DEPLOYMENT_TARGET,
        "coremltools": ct.__version__,
        "torch": torch.__version__,
    }
    return mlmodel, fields


def export_dit(
    model_dir: str | os.PathLike, model, *, model_id: str, max_frames: int | None = None, precision: str = "fp16"
) -> Path:
    """Convert ``model`` (loaded from ``model_dir``) and write ``model_dir/coreml``; returns the package path.

    The new folder is built beside the old one and swapped in, so readers see the old export, none, or the
    new one, never a partial package.
    """
    model_dir = Path(model_dir)
    mlmodel, fields = convert_dit(model, max_frames=max_frames, precision=precision)
    manifest = {"format": MANIFEST_FORMAT, "model_id": model_id, "config_sha256": config_hash(model.config),
                "weights": weights_identity(model_dir), **fields}
    target = export_dir(model_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{EXPORT_DIR}-", dir=model_dir))
    retired = None
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the export is ordinary data
        mlmodel.save(str(staging / PACKAGE_NAME))
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{EXPORT_DIR}-old-", dir=model_dir))
            os.replace(target, retired / EXPORT_DIR)
        try:
            os.replace(staging, target)
        except OSError:
            if retired is not None:  # put the old export back
                os.replace(retired / EXPORT_DIR, target)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    return target / PACKAGE_NAME


# --------------------------------------------------------------------------------------------- conversion fixes


class _Float16Ops:
    """``op_selector`` for float16 compute: every op except those whose values feed ``sin``/``cos`` (a
    ``shape`` op passes on no values, so what it reads stays float16)."""

    def __init__(self):
        self._float32: dict[int, set] = {}

    def __call__(self, op) -> bool:
        block = op.enclosing_block
        if id(block) not in self._float32:
            keep: set = set()
            for candidate in reversed(block.operations):  # operations are in topological order
                if candidate.op_type in _TRIG_OPS or candidate.op_type != "shape" and any(
                    child in keep for out in candidate.outputs for child in out.child_ops
                ):
                    keep.add(candidate)
            self._float32[id(block)] = keep
        return op not in self._float32[id(block)]


@contextlib.contextmanager
def _converter_fixes(ct) -> Iterator[None]:
    """Replace the coremltools torch converters our traced DiT needs fixed, restoring them afterwards.

    Checked with coremltools 9.0 (see tests/test_coreml.py, which runs the converted program):
    - ``new_ones`` has no converter (the memory tokens' key mask);
    - ``numtotensor`` makes a traced size a 1-element array, which ``int()`` rejects from NumPy 2.4 on;
    - ``rms_norm`` needs a constant normalized_shape (ours is traced from x.shape[-1]), and its version
      divides by max|x|, which is NaN on all-zero rows such as zero-padded frames;
    - ``constantchunk`` fails on ``chunk(1)`` (standard cross-attention's query);
    - ``pad`` rejects traced pad widths on a 3-D tensor (the local-add left pad over the memory tokens).
    """
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY as registry

    fixes = _fixes(ct, registry)
    previous = {name: registry.get_func(name) for name in fixes}
    for name, func in fixes.items():
        registry.set_func_by_name(func, name)
    try:
        yield
    finally:
        for name, func in previous.items():
            if func is None:
                registry.name_to_func_mapping.pop(name, None)
            else:
                registry.set_func_by_name(func, name)


def _fixes(ct, registry) -> dict:
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.frontend.torch.ops import _get_inputs
    from coremltools.converters.mil.mil import types

    original_chunk, original_pad = registry.get_func("constantchunk"), registry.get_func("pad")

    def new_ones(context, node):
        inputs = _get_inputs(context, node)
        x, size = inputs[:2]
        if len(inputs) > 2 and inputs[2] is not None and inputs[2].val is not None:
            raise NotImplementedError("new_ones with an explicit dtype")  # the DiT never passes one
        if isinstance(size, list):
            size = mb.concat(values=size, axis=0)
        one = True if types.is_bool(x.dtype) else np.int32(1) if types.is_int(x.dtype) else np.float32(1)
        context.add(mb.fill(shape=size, value=one, name=node.name))

    def numtotensor(context, node):
        # torch's NumToTensor makes a 0-d tensor: the scalar as it is
        context.add(_get_inputs(context, node, expected=1)[0], node.name)

    def rms_norm(context, node):
        x, shape, weight, eps = _get_inputs(context, node, expected=4)
        axes = list(range(-(len(shape) if isinstance(shape, list) else len(shape.val)), 0))
        eps = 1e-5 if eps is None or eps.val is None else float(eps.val)
        # x / sqrt(mean(x^2) + eps) computed on x / s with s = max(max|x|, 1): the same value, and no
        # float16 overflow of x^2
        scale = mb.maximum(x=mb.reduce_max(x=mb.abs(x=x), axes=axes, keep_dims=True), y=np.float32(1))
        y = mb.real_div(x=x, y=scale)
        mean = mb.reduce_mean(x=mb.square(x=y), axes=axes, keep_dims=True)
        norm = mb.rsqrt(x=mb.add(x=mean, y=mb.real_div(x=np.float32(eps), y=mb.square(x=scale))))
        out = mb.mul(x=y, y=norm)
        context.add(mb.identity(x=out, name=node.name) if weight is None else mb.mul(x=out, y=weight, name=node.name))

    def constantchunk(context, node):
        if node.attr["chunks"] != 1:
            return original_chunk(context, node)
        context.add(_get_inputs(context, node, expected=1)[0], node.outputs[0])

    def pad(context, node):
        inputs = _get_inputs(context, node)
        x, widths = inputs[0], inputs[1]
        if node.kind == "pad":  # pad(x, widths, mode, value); constant_pad_nd(x, widths, value)
            mode = inputs[2].val if len(inputs) > 2 and inputs[2] is not None else "constant"
            value = inputs[3] if len(inputs) > 3 else None
        else:
            mode, value = "constant", inputs[2] if len(inputs) > 2 else None
        if not isinstance(widths, list) or mode != "constant":
            return original_pad(context, node)
        value = np.float32(0 if value is None or value.val is None else value.val)
        # torch order: (last axis before, after, the axis before it before, after, ...); widths >= 0
        for i in range(len(widths) // 2):
            axis = x.rank - 1 - i
            for width, before in ((widths[2 * i], True), (widths[2 * i + 1], False)):
                if width.val is not None and width.val == 0:
                    continue
                shape = mb.shape(x=x)
                parts = [mb.slice_by_index(x=shape, begin=[0], end=[axis]),
                         mb.reshape(x=mb.cast(x=width, dtype="int32"), shape=[1]),
                         mb.slice_by_index(x=shape, begin=[axis + 1], end=[x.rank])]
                block = mb.fill(shape=mb.concat(values=[p for p in parts if p.shape != (0,)], axis=0), value=value)
                x = mb.concat(values=[block, x] if before else [x, block], axis=axis)
        context.add(mb.identity(x=x, name=node.name))

    return {"new_ones": new_ones, "numtotensor": numtotensor, "rms_norm": rms_norm,
            "constantchunk": constantchunk, "pad": pad, "constant_pad_nd": pad}


# --------------------------------------------------------------------------------------------- running


class CoreMLDiT:
    """The pipeline's DiT call, ``(x, t, cross, global_, local, padding_mask, padding_mode) -> v``, run by
    CoreML (macOS) from an exported package.

    The torch DiT it was exported from answers what the export does not cover: ``padding_mode="vzero"``
    (parity checks against the official CPU path), loaded LoRAs (they change the weights) and windows
    longer than the export (``--max-frames``). Items of a batch run one by one.
    """

    def __init__(self, package: str | os.PathLike, dit: nn.Module):
        ct = _coremltools()
        manifest = json.loads((Path(package).parent / MANIFEST_NAME).read_text())
        self.package, self.dit = Path(package), dit
        self.names = tuple(entry["name"] for entry in manifest["inputs"])
        self.max_frames = int(manifest["frames"][1])
        self.mlmodel = ct.models.MLModel(str(package), compute_units=ct.ComputeUnit.ALL)
        self._warned: set[str] = set()

    def _torch_reason(self, x: torch.Tensor, padding_mode: str) -> str | None:
        if padding_mode != "mask":
            return f"padding_mode {padding_mode!r} (the export is true masking)"
        if x.shape[-1] > self.max_frames:
            return f"{x.shape[-1]} frames (the export stops at {self.max_frames})"
        if any(parametrize.is_parametrized(module) for module in self.dit.modules()):
            return "LoRA adapters are loaded"
        return None

    def __call__(self, x, t, cross=None, global_=None, local=None, padding_mask=None, padding_mode="mask"):
        reason = self._torch_reason(x, padding_mode)
        if reason is not None:
            if reason not in self._warned:
                self._warned.add(reason)
                log.info("DiT runs in torch, not CoreML: %s", reason)
            return self.dit(x, t, cross, global_, local, padding_mask, padding_mode=padding_mode)
        if padding_mask is None:
            padding_mask = torch.ones(x.shape[0], x.shape[-1], dtype=torch.bool)
        given = dict(zip(INPUT_NAMES, (x, t, cross, global_, local, padding_mask), strict=True))
        missing = [name for name in self.names if given[name] is None]
        if missing:
            raise ValueError(f"the CoreML DiT needs {', '.join(missing)}")
        arrays = {name: given[name].detach().float().cpu().numpy() for name in self.names}
        out = [self.mlmodel.predict({name: np.ascontiguousarray(a[i : i + 1]) for name, a in arrays.items()})
               for i in range(x.shape[0])]
        v = np.concatenate([o[OUTPUT_NAME] for o in out])
        return torch.from_numpy(v).to(device=x.device, dtype=x.dtype)


def select_dit(dit: nn.Module, model_dir: str | os.PathLike, device: str, *, forced: bool = False):
    """The DiT the pipeline calls: :class:`CoreMLDiT` when a fresh export of ``model_dir`` exists, this is
    macOS with coremltools, and torch runs on CPU or MPS; ``dit`` otherwise. ``forced`` (``--device
    coreml``) makes a missing export an error instead."""
    usable = coreml_available() and torch.device(device).type in ("cpu", "mps")
    package = find_export(model_dir) if usable else None
    if package is not None:
        return CoreMLDiT(package, dit)
    if forced:
        why = "this machine cannot run CoreML (macOS with coremltools)" if not usable else (
            f"{model_dir} has no up-to-date CoreML export; run `sa3 export-coreml {model_dir}`")
        raise CoreMLError(f"device: 'coreml' requested but {why}")
    return dit


# --------------------------------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("model", help="model id (see `sa3 models`) or model folder")
    parser.add_argument("--models-dir", help="folder holding <id>/model_config.json (also $SA3_MODELS_DIR)")
    parser.add_argument("--max-frames", type=int,
                        help="longest latent length the export accepts (default: the model's longest window)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16",
                        help="fp16 (default; Apple GPU / Neural Engine) or fp32")


def run(args: argparse.Namespace) -> int:
    from .checkpoint import CheckpointError
    from .model import SA3Model
    from .models import resolve

    try:
        resolved = resolve(args.model, args.models_dir)
        model = SA3Model.from_pretrained(resolved.weights, config=resolved.config)
        package = export_dit(resolved.folder, model, model_id=resolved.id, max_frames=args.max_frames,
                             precision=args.precision)
    except (ValueError, OSError, CheckpointError, CoreMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    manifest = json.loads((package.parent / MANIFEST_NAME).read_text())
    print(package)
    print(f"  {manifest['precision']}, latent frames {manifest['frames'][0]}-{manifest['frames'][1]}, batch 1, "
          f"coremltools {manifest['coremltools']}; runs on macOS ({DEPLOYMENT_TARGET} or later)")
    return 0
