"""``sa3 parity DIR``: run our implementation on the official test vectors and compare.

A case folder holds ``config.json``, ``weights.safetensors``, ``inputs.safetensors``,
``outputs.safetensors`` and ``case.json`` (see shared/parity/README.md). Every size is read from
those files. A handler turns (config, weights, inputs) into named tensors; it never sees the
expected outputs. Each expected tensor is compared with numpy ``allclose`` semantics using the
case's strict tolerance; an unknown case, a handler error or a missing output is a failure.
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

DEFAULT_TOLERANCE = (1e-4, 1e-4)


@dataclass
class Case:
    path: Path
    name: str
    config: dict
    meta: dict  # case.json
    inputs: dict[str, torch.Tensor]

    @property
    def weights(self) -> Path:
        return self.path / "weights.safetensors"

    @property
    def args(self) -> dict:
        return self.meta.get("non_tensor_args", {})


@dataclass
class Masked:
    """An output to compare only where ``valid`` (broadcastable bool) is True."""

    value: torch.Tensor
    valid: torch.Tensor


Handler = Callable[[Case], dict[str, "torch.Tensor | Masked"]]


def _dit_forward(case: Case):
    raise NotImplementedError("DiT forward cases are not supported yet")


def _autoencoder(case: Case):
    raise NotImplementedError("autoencoder cases are not supported yet")


def _embeddings(case: Case):
    raise NotImplementedError("embedding cases are not supported yet")


def _pingpong_generate(case: Case):
    raise NotImplementedError("ping-pong generation cases are not supported yet")


def _base_cfg_generate(case: Case):
    raise NotImplementedError("base-model CFG generation cases are not supported yet")


def _inpaint_generate(case: Case):
    raise NotImplementedError("inpainting generation cases are not supported yet")


def _lora(case: Case):
    raise NotImplementedError("LoRA cases are not supported yet")


# (pattern over "<folder name> <component>", handler); first match wins.
HANDLERS: list[tuple[str, Handler]] = [
    (r"lora", _lora),
    (r"inpaint", _inpaint_generate),
    (r"base|cfg", _base_cfg_generate),
    (r"ping.?pong", _pingpong_generate),
    (r"autoencoder|same", _autoencoder),
    (r"embedding", _embeddings),
    (r"dit.*forward|forward.*dit", _dit_forward),
]


def find_handler(case: Case) -> Handler | None:
    text = f"{case.name} {case.meta.get('component', '')}".lower()
    for pattern, handler in HANDLERS:
        if re.search(pattern, text):
            return handler
    return None


def tolerance_for(name: str, spec: dict) -> tuple[float, float]:
    """(atol, rtol) for one output tensor from a case's ``suggested_tolerance`` (strict entries only)."""
    strict = {k: v for k, v in spec.items() if not k.startswith("relaxed")}

    def parse(value) -> tuple[float, float]:
        if isinstance(value, str):  # "exact", "bit-exact (atol 0)"
            return (0.0, 0.0)
        return (float(value.get("atol", 0.0)), float(value.get("rtol", 0.0)))

    for key, value in strict.items():
        if name in key.split("/"):
            return parse(value)
    for key, value in strict.items():
        if any("*" in k and fnmatch.fnmatch(name, k) for k in key.split("/")):
            return parse(value)
    for fallback in ("others", "other"):
        if fallback in strict:
            return parse(strict[fallback])
    return DEFAULT_TOLERANCE


def load_case(path: Path) -> Case:
    return Case(
        path=path,
        name=path.name,
        config=json.loads((path / "config.json").read_text()),
        meta=json.loads((path / "case.json").read_text()),
        inputs=load_file(str(path / "inputs.safetensors")),
    )


def case_dirs(root: Path) -> list[Path]:
    if (root / "case.json").is_file():
        return [root]
    found = sorted(p.parent for p in root.glob("*/case.json"))
    if not found:
        raise FileNotFoundError(f"no parity case (a folder with case.json) in {root}")
    return found


@dataclass
class Row:
    case: str
    tensor: str
    error: float | None
    atol: float
    rtol: float
    ok: bool
    note: str = ""

    def line(self) -> str:
        err = "-" if self.error is None else f"{self.error:.3e}"
        tol = f"atol={self.atol:g} rtol={self.rtol:g}"
        status = "ok" if self.ok else "FAIL"
        return f"{self.case:<28} {self.tensor:<34} max_abs_err={err:<10} {tol:<26} {status}" + (
            f"  ({self.note})" if self.note else ""
        )


def compare(case_name: str, name: str, ours, expected: torch.Tensor, atol: float, rtol: float) -> Row:
    valid = None
    if isinstance(ours, Masked):
        ours, valid = ours.value, ours.valid
    ours = ours.detach().to("cpu")
    if tuple(ours.shape) != tuple(expected.shape):
        return Row(case_name, name, None, atol, rtol, False, f"shape {tuple(ours.shape)} != {tuple(expected.shape)}")
    a, b = ours.to(torch.float64), expected.to(torch.float64)
    diff = (a - b).abs()
    bound = atol + rtol * b.abs()
    if valid is not None:
        valid = valid.to("cpu").expand_as(diff)
        diff, bound = diff[valid], bound[valid]
    if diff.numel() == 0:
        return Row(case_name, name, 0.0, atol, rtol, True)
    bad = ~(diff <= bound)  # NaN counts as a failure
    return Row(case_name, name, float(diff.max()), atol, rtol, not bool(bad.any()))


def run_case(path: Path) -> list[Row]:
    try:
        case = load_case(path)
    except Exception as exc:  # noqa: BLE001 - a broken folder is a failure, not a crash
        return [Row(path.name, "-", None, 0, 0, False, f"cannot read case: {exc}")]
    handler = find_handler(case)
    if handler is None:
        return [Row(case.name, "-", None, 0, 0, False, "unknown case kind")]
    expected = load_file(str(path / "outputs.safetensors"))
    spec = case.meta.get("suggested_tolerance", {})
    try:
        with torch.no_grad():
            ours = handler(case)
    except Exception as exc:  # noqa: BLE001
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return [Row(case.name, "-", None, 0, 0, False, detail)]
    rows = []
    for name, ref in expected.items():
        atol, rtol = tolerance_for(name, spec)
        if name not in ours:
            rows.append(Row(case.name, name, None, atol, rtol, False, "not produced"))
        else:
            rows.append(compare(case.name, name, ours[name], ref, atol, rtol))
    return rows


def add_arguments(parser, command: str) -> None:
    parser.add_argument("dirs", nargs="+", type=Path, help="a case folder or a folder of case folders")


def run(args) -> int:
    torch.manual_seed(0)
    passed = failed = 0
    for root in args.dirs:
        try:
            paths = case_dirs(root)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        for path in paths:
            for row in run_case(path):
                print(row.line(), flush=True)
                passed += row.ok
                failed += not row.ok
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0
