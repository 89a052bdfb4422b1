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

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from sa3_engine.models.config import CONFIG_FILENAME, WEIGHTS_FILENAME, load_config
from sa3_engine.runtime.device import coreml_available

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


# --------------------------------------------------------------------------------------------- running


def coremltools_module():
    try:
        import coremltools
    except ImportError:
        raise CoreMLError("coremltools is not installed: pip install 'sa3-daw[coreml]'") from None
    return coremltools


class CoreMLDiT:
    """The pipeline's DiT call, ``(x, t, cross, global_, local, padding_mask, padding_mode) -> v``, run by
    CoreML (macOS) from an exported package.

    The torch DiT it was exported from answers what the export does not cover: ``padding_mode="vzero"``
    (parity checks against the official CPU path), loaded LoRAs (they change the weights) and windows
    longer than the export (``--max-frames``). Items of a batch run one by one.
    """

    def __init__(self, package: str | os.PathLike, dit: nn.Module):
        ct = coremltools_module()
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


def coreml_export(model_dir: str | os.PathLike) -> Path | None:
    """The fresh CoreML export of ``model_dir`` (:func:`find_export`), when this machine can run it."""
    if not coreml_available():
        return None

    return find_export(model_dir)
