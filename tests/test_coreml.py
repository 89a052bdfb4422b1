"""The CoreML path on the tiny model: export (any machine), manifest and staleness, the converted program
checked against torch, the automatic choice; prediction itself only on macOS.

CoreML cannot predict off macOS, so on Linux the converted ML program is run by ``run_program`` below, a
small NumPy interpreter of the MIL ops the DiT converts to (float16 ops computed in float16). It checks
the traced graph, the converter fixes in ``sa3_engine.runtime.coreml`` and the float16 op selection, not Apple's
kernels; the macOS tests check those.
"""

import copy
import importlib.util
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from sa3_engine.cli.main import main
from sa3_engine.export import coreml as coreml_export
from sa3_engine.generation.pipeline import Pipeline
from sa3_engine.models.config import TEXT_ENCODER_SUBFOLDER, load_config
from sa3_engine.models.sa3 import SA3Model
from sa3_engine.runtime import coreml
from sa3_engine.runtime.device import pick_device
from sa3_engine.weights.registry import resolve

HAS_COREMLTOOLS = importlib.util.find_spec("coremltools") is not None
needs_coremltools = pytest.mark.skipif(
    not HAS_COREMLTOOLS, reason="coremltools is not installed (pip install -e '.[coreml]'); it converts on Linux too")
macos_only = pytest.mark.skipif(
    sys.platform != "darwin" or not HAS_COREMLTOOLS,
    reason="CoreML prediction needs macOS (with coremltools); Linux checks the converted program instead")

MAX_FRAMES = 64


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """A models dir with a private copy of the tiny model (weights and config copied, text encoder linked),
    so exports and touched files never reach the shared cache."""
    source = resolve("tiny-random").folder
    root = tmp_path_factory.mktemp("models")
    folder = root / "tiny-random"
    folder.mkdir()
    for entry in source.iterdir():
        if entry.name == TEXT_ENCODER_SUBFOLDER:
            (folder / entry.name).symlink_to(entry)
        elif entry.is_file():
            shutil.copy2(entry, folder / entry.name)
    return root


@pytest.fixture(scope="module")
def model(models_dir) -> SA3Model:
    folder = models_dir / "tiny-random"
    return SA3Model.from_pretrained(folder / "model.safetensors", config=folder / "model_config.json")


@pytest.fixture(scope="module")
def converted(model):
    """(MLModel, manifest fields) of the tiny DiT in float16, converted once per module (float32 is
    converted for the differential variant and by the CLI test: each conversion takes seconds)."""
    if not HAS_COREMLTOOLS:
        pytest.skip("coremltools is not installed")
    return coreml_export.convert_dit(model, max_frames=MAX_FRAMES, precision="fp16")


def fresh_copy(models_dir: Path, tmp_path: Path) -> Path:
    """A per-test model folder (weights and config copied) for tests that change files."""
    folder = tmp_path / "tiny-random"
    shutil.copytree(models_dir / "tiny-random", folder, symlinks=True)
    return folder


def fake_export(folder: Path, **changes) -> dict:
    """An export folder with a manifest as ``export_dit`` writes it (the package itself left empty)."""
    manifest = {"format": coreml.MANIFEST_FORMAT, "model_id": "tiny-random",
                "config_sha256": coreml.config_hash(load_config(folder)),
                "weights": coreml.weights_identity(folder), **changes}
    target = coreml.export_dir(folder)
    (target / coreml.PACKAGE_NAME).mkdir(parents=True)
    (target / coreml.MANIFEST_NAME).write_text(json.dumps(manifest))
    return manifest


def torch_inputs(model, frames: int, valid: int, seed: int) -> dict[str, torch.Tensor]:
    """Example inputs of ``frames`` frames with ``valid`` valid ones; x is zero past the valid frames, as
    the pipeline's noise is for a batched item shorter than its window."""
    inputs = coreml_export.example_inputs(model, frames, seed=seed)
    inputs["padding_mask"] = (torch.arange(frames) < valid).float()[None]
    inputs["x"][..., valid:] = 0
    return inputs


def torch_velocity(model, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    with torch.no_grad():
        v = model.dit(inputs["x"], inputs["t"], inputs["cross_attn_cond"], inputs["global_cond"],
                      inputs["local_add_cond"], inputs["padding_mask"] > 0.5, padding_mode="mask")
    return v.numpy()


# --------------------------------------------------------------------------------------------- a MIL interpreter

_DTYPES = {"fp32": np.float32, "fp16": np.float16, "int32": np.int32, "int16": np.int16, "uint16": np.uint16,
           "int8": np.int8, "uint8": np.uint8, "bool": np.bool_}


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _slice(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    index = []
    for axis in range(x.ndim):
        if squeeze_mask is not None and squeeze_mask[axis]:
            index.append(int(begin[axis]))
            continue
        start = None if begin_mask is not None and begin_mask[axis] else int(begin[axis])
        stop = None if end_mask is not None and end_mask[axis] else int(end[axis])
        index.append(slice(start, stop, None if stride is None else int(stride[axis])))
    return x[tuple(index)]


def _reshape(x, shape):
    shape = [x.shape[i] if d == 0 and len(shape) == x.ndim else int(d) for i, d in enumerate(shape)]
    return x.reshape(shape)


def _attention(query, key, value, attn_mask=None):
    scores = query @ np.swapaxes(key, -1, -2) / np.sqrt(query.shape[-1]).astype(query.dtype)
    if attn_mask is not None:
        scores = np.where(attn_mask, scores, -np.inf) if attn_mask.dtype == np.bool_ else scores + attn_mask
    return (_softmax(scores.astype(np.float32)).astype(query.dtype)) @ value


def _conv(x, weight, bias=None, **_):
    assert weight.shape[-1] == 1, "only pointwise convolutions are used by the DiT"
    out = np.einsum("oi,bit->bot", weight[..., 0], x)
    return out if bias is None else out + bias[:, None]


_OPS = {
    "add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
    "real_div": lambda x, y: x / y, "maximum": lambda x, y: np.maximum(x, y), "greater": lambda x, y: x > y,
    "square": lambda x: x * x, "abs": lambda x: np.abs(x), "cos": lambda x: np.cos(x), "sin": lambda x: np.sin(x),
    "rsqrt": lambda x, epsilon=1e-12: 1 / np.sqrt(x + epsilon),
    # in float32: exp(-x) overflows float16 for x < -11, where the result is still well defined
    "sigmoid": lambda x: 1 / (1 + np.exp(-x.astype(np.float32))),
    "silu": lambda x: x / (1 + np.exp(-x.astype(np.float32))),
    "linear": lambda x, weight, bias=None: x @ weight.T + (0 if bias is None else bias),
    "reduce_max": lambda x, axes, keep_dims=False: x.max(axis=tuple(axes), keepdims=keep_dims),
    "reduce_mean": lambda x, axes, keep_dims=False: x.mean(axis=tuple(axes), keepdims=keep_dims).astype(x.dtype),
    "transpose": lambda x, perm: np.transpose(x, perm), "reshape": _reshape,
    "expand_dims": lambda x, axes: np.expand_dims(x, tuple(axes)),
    "concat": lambda values, axis, interleave=False: np.concatenate(values, axis=int(axis)),
    "split": lambda x, split_sizes, axis: np.split(x, np.cumsum(split_sizes)[:-1], axis=int(axis)),
    "slice_by_index": _slice, "shape": lambda x: np.array(x.shape, dtype=np.int32),
    "gather": lambda x, indices, axis=0, batch_dims=0, validate_indices=False: np.take(x, indices, axis=int(axis)),
    "range_1d": lambda end, start, step: np.arange(start, end, step, dtype=np.int32),
    "cast": lambda x, dtype: np.asarray(x).astype(_DTYPES[dtype]), "identity": lambda x: x,
    "fill": lambda shape, value=0.0: np.full(tuple(int(d) for d in shape), value),
    "scaled_dot_product_attention": _attention, "conv": _conv,
}


def run_program(program, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Evaluate a converted ML program's main function on ``feeds`` (inputs are cast to their declared
    dtypes); every value is computed in the dtype the program declares for it."""
    function = program.functions["main"]
    values = {name: feeds[name].astype(_DTYPES[_dtype_name(var)]) for name, var in function.inputs.items()}

    def value(var):
        return values[var.name] if var.name in values else var.val

    for op in function.operations:
        if op.op_type == "const":  # also strings and flags (pad_type, dtype names): read as they are
            continue
        kwargs = {k: [value(v) for v in var] if isinstance(var, (list, tuple)) else value(var)
                  for k, var in op.inputs.items()}
        out = _OPS[op.op_type](**kwargs)
        for var, result in zip(op.outputs, out if isinstance(out, list) else [out], strict=True):
            values[var.name] = np.asarray(result).astype(_DTYPES[_dtype_name(var)])
    return {var.name: values[var.name] for var in function.outputs}


def _dtype_name(var) -> str:
    from coremltools.converters.mil.mil import types

    return types.builtin_to_string(var.dtype)


# --------------------------------------------------------------------------------------------- the traced program


def test_trace_generalises_to_other_lengths(model):
    """Traced at 8 frames, the graph keeps the length symbolic: at 14 frames (3 padded) it equals eager."""
    traced, _ = coreml_export.trace_dit(model, 8)
    inputs = torch_inputs(model, 14, valid=11, seed=1)
    with torch.no_grad():
        out = traced(*inputs.values()).numpy()
    np.testing.assert_allclose(out, torch_velocity(model, inputs), atol=1e-5)


@needs_coremltools
def test_program_interface(converted, model):
    mlmodel, fields = converted
    function = mlmodel._mil_program.functions["main"]  # the program coremltools built (its Python object)
    names = list(coreml.INPUT_NAMES)
    assert list(function.inputs) == names
    assert [e["name"] for e in fields["inputs"]] == names
    for entry in fields["inputs"]:
        var = function.inputs[entry["name"]]
        assert _dtype_name(var) == "fp32"
        fixed = [d for d in entry["shape"] if d != coreml.FRAMES]
        assert [d for d in var.shape if isinstance(d, int)] == fixed
        assert len(var.shape) == len(entry["shape"])  # the frames axis is the symbolic one
    assert [var.name for var in function.outputs] == [coreml.OUTPUT_NAME]
    assert _dtype_name(function.outputs[0]) == "fp32"
    channels, text = model.io_channels, model.conditioner.conditioners["prompt"].max_length
    shapes = {e["name"]: e["shape"] for e in fields["inputs"]}
    assert shapes["x"] == [1, channels, "frames"] and shapes["padding_mask"] == [1, "frames"]
    assert shapes["cross_attn_cond"] == [1, text + 1, 768]  # prompt tokens + the duration token
    assert fields["frames"] == [1, MAX_FRAMES] and fields["batch"] == 1


@needs_coremltools
def test_float16_keeps_the_fourier_and_rotary_angles_in_float32(converted, model):
    ops = list(converted[0]._mil_program.functions["main"].operations)
    trig = [op for op in ops if op.op_type in ("sin", "cos")]
    assert len(trig) == 4  # timestep Fourier features and RoPE, one sin and one cos each
    assert {_dtype_name(op.outputs[0]) for op in trig} == {"fp32"}
    linear = [_dtype_name(op.outputs[0]) for op in ops if op.op_type == "linear"]
    assert linear.count("fp16") >= len(linear) - 1  # all but the timestep embedder's input layer
    attention = [op for op in ops if op.op_type == "scaled_dot_product_attention"]
    assert len(attention) == 2 * len(model.dit.transformer.layers)  # self + cross per layer, fused
    assert {_dtype_name(op.outputs[0]) for op in attention} == {"fp16"}


@needs_coremltools
def test_converted_program_matches_torch(converted, model):
    """At a length it was not traced at, with padded frames whose x is zero (all-zero rows through RMSNorm).

    float16: ~1e-3 of the largest |v|; with the angles in float16 too it is 6e-3 to 1.5e-2.
    """
    mlmodel, _ = converted
    inputs = torch_inputs(model, 12, valid=9, seed=2)
    expected = torch_velocity(model, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # overflow or 0/0 in the program fails the test
        got = run_program(mlmodel._mil_program, {k: v.numpy() for k, v in inputs.items()})[coreml.OUTPUT_NAME]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got[..., :9], expected[..., :9], atol=4e-3 * np.abs(expected).max())
    assert np.isfinite(got).all()


@needs_coremltools
def test_differential_attention_with_partial_rotary_converts(model):
    """The medium models' layout: differential attention, head size 64 of which RoPE rotates 32; float32."""
    config = copy.deepcopy(model.config)
    dit = config["model"]["diffusion"]["config"]
    dit.update(embed_dim=128, num_heads=2)
    dit["attn_kwargs"]["differential"] = True
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        variant = SA3Model.from_config(config).eval().requires_grad_(False)
    mlmodel, _ = coreml_export.convert_dit(variant, max_frames=MAX_FRAMES, precision="fp32")
    program = mlmodel._mil_program
    attention = [op for op in program.functions["main"].operations if op.op_type == "scaled_dot_product_attention"]
    assert len(attention) == 2 * 2 * len(variant.dit.transformer.layers)  # two softmaxes, self and cross
    inputs = torch_inputs(variant, 10, valid=7, seed=6)
    expected = torch_velocity(variant, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = run_program(program, {k: v.numpy() for k, v in inputs.items()})[coreml.OUTPUT_NAME]
    np.testing.assert_allclose(got[..., :7], expected[..., :7], atol=1e-4 * np.abs(expected).max())


# --------------------------------------------------------------------------------------------- export and manifest


@needs_coremltools
def test_export_cli_round_trip(models_dir, model, converted, tmp_path, capsys, monkeypatch):
    folder = fresh_copy(models_dir, tmp_path)
    before = sorted(p.name for p in folder.iterdir())
    code = main(["export-coreml", "tiny-random", "--models-dir", str(tmp_path), "--max-frames", "32",
                 "--precision", "fp32"])
    assert code == 0, capsys.readouterr().err
    package = folder / "coreml" / "dit.mlpackage"
    assert str(package) in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == sorted([*before, "coreml"])  # no staging left over
    assert sorted(p.name for p in (folder / "coreml").iterdir()) == ["dit.json", "dit.mlpackage"]
    manifest = json.loads((folder / "coreml" / "dit.json").read_text())
    stat = (folder / "model.safetensors").stat()
    import coremltools
    from coremltools.proto.FeatureTypes_pb2 import ArrayFeatureType

    assert manifest["model_id"] == "tiny-random"
    assert manifest["config_sha256"] == coreml.config_hash(json.loads((folder / "model_config.json").read_text()))
    assert manifest["weights"] == {"file": "model.safetensors", "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    assert manifest["precision"] == "fp32" and manifest["frames"] == [1, 32]
    assert manifest["coremltools"] == coremltools.__version__ and manifest["padding_mode"] == "mask"
    assert [e["name"] for e in manifest["inputs"]] == list(coreml.INPUT_NAMES)
    assert coreml.find_export(folder) == package

    # the saved package declares the same interface: float32 inputs, the frames axis flexible up to 32
    spec = coremltools.utils.load_spec(str(package))
    declared = {i.name: i.type.multiArrayType for i in spec.description.input}
    assert list(declared) == list(coreml.INPUT_NAMES)
    ranges = [(r.lowerBound, r.upperBound) for r in declared["x"].shapeRange.sizeRanges]
    assert ranges == [(1, 1), (16, 16), (1, 32)]
    assert {d.dataType for d in declared.values()} == {ArrayFeatureType.FLOAT32}

    # exporting again replaces the folder as a whole (the conversion done once already, to save time)
    monkeypatch.setattr(coreml_export, "convert_dit", lambda *a, **k: converted)
    coreml_export.export_dit(folder, model, model_id="tiny-random")
    manifest = json.loads((folder / "coreml" / "dit.json").read_text())
    assert manifest["precision"] == "fp16" and manifest["frames"] == [1, MAX_FRAMES]
    assert sorted(p.name for p in folder.iterdir()) == sorted([*before, "coreml"])
    assert coreml.find_export(folder) == package


def test_export_failure_leaves_the_old_export(model, models_dir, tmp_path, monkeypatch):
    folder = fresh_copy(models_dir, tmp_path)
    old = fake_export(folder, precision="fp32")
    before = sorted(p.name for p in folder.iterdir())

    class Broken:
        def save(self, path):
            Path(path).mkdir()
            (Path(path) / "partial").write_bytes(b"x")
            raise OSError("disk full")

    monkeypatch.setattr(coreml_export, "convert_dit", lambda *a, **k: (Broken(), {}))
    with pytest.raises(OSError, match="disk full"):
        coreml_export.export_dit(folder, model, model_id="tiny-random")
    assert sorted(p.name for p in folder.iterdir()) == before
    assert json.loads((folder / "coreml" / "dit.json").read_text()) == old
    assert not any((folder / "coreml" / "dit.mlpackage").iterdir())


def test_stale_exports_are_ignored_with_a_warning(models_dir, tmp_path):
    folder = fresh_copy(models_dir, tmp_path)
    assert coreml.find_export(folder) is None  # no export at all: silently none
    fake_export(folder)
    assert coreml.find_export(folder) == folder / "coreml" / "dit.mlpackage"

    stat = (folder / "model.safetensors").stat()
    os.utime(folder / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.warns(UserWarning, match="model.safetensors changed"):
        assert coreml.find_export(folder) is None

    shutil.rmtree(folder / "coreml")
    fake_export(folder)
    config = json.loads((folder / "model_config.json").read_text())
    config["model"]["diffusion"]["config"]["depth"] = 3
    (folder / "model_config.json").write_text(json.dumps(config, indent=4))
    with pytest.warns(UserWarning, match="model_config.json changed"):
        assert coreml.find_export(folder) is None

    # only the content counts: the same config written differently keeps the export fresh
    shutil.rmtree(folder / "coreml")
    fake_export(folder)
    (folder / "model_config.json").write_text(json.dumps(config, sort_keys=True))
    assert coreml.find_export(folder) is not None

    (folder / "coreml" / "dit.json").write_text("{not json")
    assert coreml.find_export(folder) is None


@needs_coremltools
def test_bad_export_arguments_name_the_field(model, models_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match="max_frames"):
        coreml_export.convert_dit(model, max_frames=10**6)
    with pytest.raises(ValueError, match="precision"):
        coreml_export.convert_dit(model, precision="int8")
    folder = fresh_copy(models_dir, tmp_path)
    assert main(["export-coreml", str(folder), "--max-frames", "0"]) == 2
    assert "max_frames" in capsys.readouterr().err
    assert not (folder / "coreml").exists()


# --------------------------------------------------------------------------------------------- choosing CoreML


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the behaviour where CoreML cannot run")
def test_elsewhere_the_torch_dit_runs(models_dir, tmp_path):
    folder = fresh_copy(models_dir, tmp_path)
    fake_export(folder)
    pipe = Pipeline.load(str(folder))
    assert pipe.dit is pipe.model.dit
    with pytest.raises(ValueError, match="device: 'coreml'"):
        pick_device("coreml")
    with pytest.raises(ValueError, match="cannot run CoreML"):
        coreml.select_dit(pipe.model.dit, folder, "cpu", forced=True)


@needs_coremltools
def test_coreml_dit_hands_what_the_export_does_not_cover_to_torch(converted, model, tmp_path, monkeypatch):
    """vzero padding, frames beyond the export and loaded LoRAs run the torch DiT (no prediction needed)."""
    from torch.nn.utils import parametrize

    mlmodel, fields = converted
    package = tmp_path / "coreml" / coreml.PACKAGE_NAME
    package.parent.mkdir()
    mlmodel.save(str(package))
    (package.parent / coreml.MANIFEST_NAME).write_text(json.dumps(fields))
    dit = coreml.CoreMLDiT(package, model.dit)
    monkeypatch.setattr(dit.mlmodel, "predict", lambda feeds: pytest.fail("CoreML was asked"))
    short, long = torch_inputs(model, 8, 6, seed=3), torch_inputs(model, MAX_FRAMES + 2, MAX_FRAMES, seed=3)

    def check(inputs, mode):
        args = list(inputs.values())
        args[-1] = args[-1] > 0.5
        with torch.no_grad(), parametrize.cached():
            expected = model.dit(*args, padding_mode=mode)
            np.testing.assert_array_equal(dit(*args, padding_mode=mode).numpy(), expected.numpy())

    check(short, "vzero")
    check(long, "mask")
    layer = model.dit.transformer.project_in
    parametrize.register_parametrization(layer, "weight", Doubled())  # what a loaded LoRA looks like
    try:
        check(short, "mask")
    finally:
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)


class Doubled(torch.nn.Module):
    def forward(self, weight):
        return 2 * weight


@macos_only
def test_coreml_prediction_matches_torch(model, models_dir, tmp_path):
    folder = fresh_copy(models_dir, tmp_path)
    package = coreml_export.export_dit(folder, model, model_id="tiny-random", max_frames=MAX_FRAMES, precision="fp16")
    dit = coreml.CoreMLDiT(package, model.dit)
    # a batch of two with different padding: each item as torch computes it
    a, b = torch_inputs(model, 20, valid=20, seed=4), torch_inputs(model, 20, valid=13, seed=5)
    batch = [torch.cat([a[k], b[k]]) for k in a]
    batch[-1] = batch[-1] > 0.5
    got = dit(*batch).numpy()
    for i, item in enumerate((a, b)):
        expected = torch_velocity(model, item)
        valid = int(item["padding_mask"].sum())
        np.testing.assert_allclose(got[i : i + 1, :, :valid], expected[..., :valid],
                                   atol=1e-2 * max(1.0, np.abs(expected).max()))


@macos_only
def test_pipeline_uses_a_fresh_export_on_macos(model, models_dir, tmp_path):
    folder = fresh_copy(models_dir, tmp_path)
    coreml_export.export_dit(folder, model, model_id="tiny-random", max_frames=MAX_FRAMES, precision="fp32")
    pipe = Pipeline.load(str(folder), device="cpu")
    assert isinstance(pipe.dit, coreml.CoreMLDiT)
    reference = Pipeline.load(str(folder), device="cpu")
    reference.dit = reference.model.dit
    kwargs = dict(prompt="house loop", duration=1.0, seed=7, steps=2)
    got, expected = pipe.generate(**kwargs)[0].audio, reference.generate(**kwargs)[0].audio
    np.testing.assert_allclose(got, expected, atol=1e-2)
    assert Pipeline.load(str(folder), device="coreml").dit.package == folder / "coreml" / "dit.mlpackage"
