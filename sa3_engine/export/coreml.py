"""``sa3 export-coreml``: the DiT traced and converted to a CoreML package with a manifest (converts anywhere;
the package runs on macOS through ``coreml.CoreMLDiT``)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sa3_engine.runtime.coreml import (
    DEPLOYMENT_TARGET,
    EXPORT_DIR,
    FRAMES,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    OUTPUT_NAME,
    PACKAGE_NAME,
    PRECISIONS,
    config_hash,
    coremltools_module,
    export_dir,
    weights_identity,
)

# --------------------------------------------------------------------------------------------- export


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
    from sa3_engine.generation.pipeline import Pipeline
    from sa3_engine.models.conditioners import TEXT_ENCODER_DIMS

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
    from sa3_engine.generation.geometry import Geometry

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
    ct = coremltools_module()
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

_LATENT_INPUTS = ("x", "local_add_cond", "padding_mask")  # inputs whose last axis is latent frames
_TRIG_OPS = ("sin", "cos")


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


