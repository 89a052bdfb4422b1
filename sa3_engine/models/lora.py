"""Official-format LoRA / DoRA adapters: read a file, attach it, change its strength, unload it.

An adapter file holds, per adapted layer, tensors under ``<layer>.parametrizations.weight.0.<param>``,
with layer names relative to the DiT wrapper (``model.transformer...``) or to the conditioner
(``conditioners.seconds_total...``), plus a ``lora_config`` JSON entry in the safetensors metadata.
Each loaded file puts one torch parametrization on every layer it names; several files chain in load
order (W -> p0(W) -> p1(p0(W))), as the official loader stacks them. Base weights are never written,
so unloading gives back the original parameter objects untouched.

Weights are recomputed on every access; wrap a sampling loop in
``torch.nn.utils.parametrize.cached()`` to compute them once per call.
"""

from __future__ import annotations

import itertools
import json
import math
import pickle
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.utils.parametrize as parametrize
from safetensors import SafetensorError, safe_open
from torch import nn

ADAPTED_TYPES = (nn.Linear, nn.Conv1d)

# adapter type -> (low-rank form, how the update meets W). "ab": delta = B @ A;
# "xs": delta = U @ M_xs @ V^T with U, V the leading singular vectors of the base weight.
ADAPTER_TYPES: dict[str, tuple[str, str]] = {
    "lora": ("ab", "add"),
    "dora-rows": ("ab", "rows"),
    "dora-cols": ("ab", "cols"),
    "bora": ("ab", "bora"),
    "lora-xs": ("xs", "add"),
    "dora-rows-xs": ("xs", "rows"),
    "dora-cols-xs": ("xs", "cols"),
    "bora-xs": ("xs", "bora"),
}
_FACTORS = {"ab": ("lora_A", "lora_B"), "xs": ("M_xs",)}
_MAGNITUDES = {"add": (), "rows": ("magnitude",), "cols": ("magnitude",), "bora": ("magnitude_r", "magnitude_c")}
PARAM_NAMES = ("lora_A", "lora_B", "M_xs", "magnitude", "magnitude_r", "magnitude_c")

_KEY = re.compile(r"^(?P<layer>.+)\.parametrizations\.weight\.0\.(?P<param>\w+)$")
# Newer official files may carry DoRA row norms precomputed against the base they were trained on,
# so that a loader can work without the base weights. We always have the base and recompute them.
_BAKED_NORM = "baked_vnorm_row"
_EPS = 1e-12
_load_order = itertools.count()


@dataclass(frozen=True)
class LoraConfig:
    rank: int
    alpha: float
    adapter_type: str
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


@dataclass
class AdapterFile:
    path: Path
    config: LoraConfig
    layers: dict[str, dict[str, torch.Tensor]]  # layer name -> {param name: float32 tensor}


@dataclass(eq=False)
class Lora:
    """One loaded adapter file. ``strength`` is read at every weight computation."""

    name: str
    path: Path
    config: LoraConfig
    strength: float
    layer_names: tuple[str, ...]  # prefixed as in a full checkpoint ("model.model....", "conditioner....")
    order: int = field(default_factory=lambda: next(_load_order))


# ---------------------------------------------------------------------------------------------- reading


def read_adapter_file(path: str | Path) -> AdapterFile:
    path = Path(path)
    tensors, meta = _read_tensors(path)
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.endswith("." + _BAKED_NORM):
            continue
        m = _KEY.match(key)
        if m is None or m["param"] not in PARAM_NAMES:
            raise ValueError(
                f"{path}: unrecognised adapter tensor {key!r} (expected "
                f"'<layer>.parametrizations.weight.0.<{'|'.join(PARAM_NAMES)}>')"
            )
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            kind = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{path}: adapter tensor {key!r} is {kind}, expected a floating-point tensor")
        layers.setdefault(m["layer"], {})[m["param"]] = value
    if not layers:
        raise ValueError(f"{path}: no adapter tensors")
    config = _parse_config(meta, layers, path)
    for params in layers.values():
        for name, value in params.items():
            # legacy files store magnitudes as (1, n) or (n, 1)
            params[name] = (value.reshape(-1) if name.startswith("magnitude") else value).float()
    return AdapterFile(path, config, layers)


def _read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    if not path.is_file():
        raise FileNotFoundError(f"adapter file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                tensors = {key: f.get_tensor(key) for key in f.keys()}
                text = (f.metadata() or {}).get("lora_config")
        except SafetensorError as exc:  # truncated or corrupt: bad input, not a crash
            raise ValueError(f"{path}: not a safetensors LoRA file: {exc}") from None
        try:
            meta = json.loads(text) if text else {}
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: metadata 'lora_config' is not valid JSON: {exc}") from exc
        return tensors, meta
    if path.suffix == ".ckpt":
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise ValueError(
                f"{path}: this Lightning checkpoint holds more than tensors and plain values, so it is not "
                "loaded (unpickling could run code); convert it to .safetensors with the official "
                "convert_lora_ckpt_to_safetensors"
            ) from exc
        if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
            raise ValueError(f"{path}: expected a checkpoint dict with a 'state_dict' entry")
        meta = ckpt.get("lora_config") or {}
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: 'lora_config' must be a dict, got {type(meta).__name__}")
        return ckpt["state_dict"], meta
    raise ValueError(f"{path}: unsupported adapter file type {path.suffix!r} (expected .safetensors or .ckpt)")


def _parse_config(meta: dict, layers: dict[str, dict[str, torch.Tensor]], path: Path) -> LoraConfig:
    adapter_type = meta.get("adapter_type") or "lora"
    if adapter_type == "dora":
        adapter_type = _legacy_dora_variant(layers)
    if adapter_type not in ADAPTER_TYPES:
        raise ValueError(
            f"{path}: unsupported lora_config adapter_type {adapter_type!r} "
            f"(expected one of {', '.join(ADAPTER_TYPES)} or 'dora')"
        )
    rank = meta.get("rank")
    if rank is None:
        rank = _infer_rank(layers, path)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ValueError(f"{path}: lora_config rank must be a positive integer, got {rank!r}")
    alpha = meta.get("alpha")
    alpha = float(rank if alpha is None else alpha)
    if not math.isfinite(alpha):
        raise ValueError(f"{path}: lora_config alpha must be finite, got {alpha!r}")
    return LoraConfig(
        rank=rank,
        alpha=alpha,
        adapter_type=adapter_type,
        include=_patterns(meta.get("include"), "include", path),
        exclude=_patterns(meta.get("exclude"), "exclude", path),
    )


def _legacy_dora_variant(layers: dict[str, dict[str, torch.Tensor]]) -> str:
    """Legacy "dora": the first 2-D magnitude tells the axis ((1, fan_in) -> cols); otherwise rows."""
    for params in layers.values():
        magnitude = params.get("magnitude")
        if magnitude is not None:
            if magnitude.dim() == 2 and magnitude.shape[0] == 1:
                return "dora-cols"
            return "dora-rows"
    return "dora-rows"


def _infer_rank(layers: dict[str, dict[str, torch.Tensor]], path: Path) -> int:
    for params in layers.values():
        if "lora_A" in params:
            return params["lora_A"].shape[0]
        if "lora_B" in params:
            return params["lora_B"].shape[-1]
        if "M_xs" in params:
            return params["M_xs"].shape[0]
    raise ValueError(f"{path}: lora_config has no rank and no lora_A / lora_B / M_xs tensor to infer it from")


def _patterns(value, name: str, path: Path) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise ValueError(f"{path}: lora_config {name} must be null or a list of strings, got {value!r}")
    return tuple(value)


def expand_pattern(pattern: str) -> list[str]:
    """Bracket ranges in a layer filter: 'layers.[0-2].' -> ['layers.0.', 'layers.1.', 'layers.2.']."""
    m = re.search(r"\[(\d+)-(\d+)\]", pattern)
    if m is None:
        return [pattern]
    lo, hi = int(m[1]), int(m[2])
    step = 1 if hi >= lo else -1
    tails = expand_pattern(pattern[m.end():])
    return [pattern[: m.start()] + str(n) + tail for n in range(lo, hi + step, step) for tail in tails]


def matches_any(name: str, patterns: Sequence[str] | None) -> bool:
    """Substring match against any pattern (with bracket expansion), as the official filters do."""
    return any(p in name for pattern in patterns or () for p in expand_pattern(pattern.strip()))


# -------------------------------------------------------------------------------------------- attaching


class LayerAdapter(nn.Module):
    """The parametrization one adapter file puts on one weight: W -> adapted W at the file's strength.

    The update is computed in float32 and cast to W's dtype. DoRA-family adapters return W itself at
    strength exactly 0, as the official code does (their magnitude would otherwise still rescale W).
    """

    def __init__(self, lora: Lora, tensors: dict[str, torch.Tensor], bases: tuple[torch.Tensor, ...] = ()):
        super().__init__()
        self.lora = lora
        self.form, self.combine = ADAPTER_TYPES[lora.config.adapter_type]
        for name, value in tensors.items():
            self.register_buffer(name, value)
        if bases:
            self.register_buffer("U", bases[0])
            self.register_buffer("V", bases[1])

    def delta(self) -> torch.Tensor:
        """The unscaled low-rank update as (fan_out, fan_in), float32."""
        if self.form == "xs":
            return self.U.float() @ self.M_xs.float() @ self.V.float().T
        return self.lora_B.float() @ self.lora_A.float()

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        strength = self.lora.strength
        scale = self.lora.config.scaling * strength
        if self.combine == "add":
            return weight + (scale * self.delta()).view(weight.shape).to(weight.dtype)
        if strength == 0:
            return weight
        v = weight.reshape(weight.shape[0], -1).float() + scale * self.delta()
        if self.combine == "bora":
            rows = _unit(v, 1) * self.magnitude_r.float()[:, None]
            out = _unit(rows, 0) * self.magnitude_c.float()[None, :]
        else:
            dim = 1 if self.combine == "rows" else 0
            out = _unit(v, dim) * self.magnitude.float().unsqueeze(dim)
        return out.view(weight.shape).to(weight.dtype)


def _unit(v: torch.Tensor, dim: int) -> torch.Tensor:
    return v / (v.norm(dim=dim, keepdim=True) + _EPS)


def load_lora(
    model,
    path: str | Path,
    strength: float = 1.0,
    *,
    exclude: Sequence[str] = (),
    svd_bases: str | Path | None = None,
) -> Lora:
    """Attach an adapter file on top of whatever is loaded; returns its handle.

    ``model`` is an SA3Model (adapters go on ``model.model`` and ``model.conditioner``), a
    ``(dit_wrapper, conditioner)`` pair, or any module (layer names relative to it). ``exclude`` skips
    the file's layers whose names contain one of the patterns. ``svd_bases`` is an optional official
    SVD-bases ``.pt`` for -xs adapters (else bases come from the base weights). Every other tensor of
    the file must land on a Linear / Conv1d of the right shape, or nothing is attached.
    """
    adapter_file = read_adapter_file(path)
    config = adapter_file.config
    targets = _targets(model)
    modules = _module_index(targets)
    bases_table = _read_svd_bases(svd_bases) if svd_bases is not None and config.adapter_type.endswith("-xs") else {}
    lora = Lora(
        name=adapter_file.path.stem,
        path=adapter_file.path,
        config=config,
        strength=_check_strength(strength),
        layer_names=(),
    )
    planned = []
    for layer, tensors in sorted(adapter_file.layers.items()):
        if matches_any(layer, exclude):
            continue
        where = f"{adapter_file.path}: layer {layer!r}"
        if config.include is not None and not matches_any(layer, config.include):
            raise ValueError(f"{where} is not matched by the file's own lora_config include {list(config.include)}")
        if matches_any(layer, config.exclude):
            raise ValueError(f"{where} is matched by the file's own lora_config exclude {list(config.exclude)}")
        prefix, module = _find_layer(modules, targets, layer, where)
        base = _base_weight(module)
        _check_tensors(tensors, config, base, where)
        bases = ()
        if ADAPTER_TYPES[config.adapter_type][0] == "xs":
            bases = _svd_bases(base, config.rank, bases_table.get(f"{prefix}{layer}.weight"), where)
        tensors = {name: value.to(base.device) for name, value in tensors.items()}
        planned.append((prefix + layer, module, LayerAdapter(lora, tensors, bases)))
    if not planned:
        raise ValueError(f"{adapter_file.path}: every layer is excluded by {list(exclude)}")
    for _, module, adapter in planned:
        parametrize.register_parametrization(module, "weight", adapter)
    lora.layer_names = tuple(name for name, _, _ in planned)
    return lora


def _targets(model) -> dict[str, nn.Module]:
    """Checkpoint-key prefix -> module the adapter layer names are relative to."""
    if isinstance(model, (tuple, list)):
        if len(model) != 2:
            raise TypeError("expected a (dit_wrapper, conditioner) pair")
        pair = {"model.": model[0], "conditioner.": model[1]}
    elif isinstance(getattr(model, "model", None), nn.Module) and hasattr(model, "conditioner"):
        pair = {"model.": model.model, "conditioner.": model.conditioner}
    elif isinstance(model, nn.Module):
        return {"": model}
    else:
        raise TypeError(f"cannot attach adapters to {type(model).__name__}")
    return {prefix: module for prefix, module in pair.items() if module is not None}


def _module_index(targets: dict[str, nn.Module]) -> dict[str, list[tuple[str, nn.Module]]]:
    index: dict[str, list[tuple[str, nn.Module]]] = {}
    for prefix, root in targets.items():
        for name, module in root.named_modules():
            index.setdefault(name, []).append((prefix, module))
    return index


def _find_layer(
    index: dict[str, list[tuple[str, nn.Module]]], targets: dict[str, nn.Module], layer: str, where: str
) -> tuple[str, nn.Module]:
    found = index.get(layer, [])
    if not found:
        roots = ", ".join(repr(p) for p in targets) or "the model"
        raise ValueError(f"{where}: no module of that name (names are relative to {roots})")
    if len(found) > 1:
        raise ValueError(f"{where}: ambiguous, present in several of {list(targets)}")
    prefix, module = found[0]
    if not isinstance(module, ADAPTED_TYPES):
        raise ValueError(f"{where}: is a {type(module).__name__}, adapters go on Linear / Conv1d only")
    return prefix, module


def _base_weight(module: nn.Module) -> torch.Tensor:
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


def _check_tensors(tensors: dict[str, torch.Tensor], config: LoraConfig, base: torch.Tensor, where: str) -> None:
    form, combine = ADAPTER_TYPES[config.adapter_type]
    fan_out, fan_in = base.shape[0], base[0].numel()
    r = config.rank
    expected = {
        "lora_A": (r, fan_in),
        "lora_B": (fan_out, r),
        "M_xs": (r, r),
        "magnitude": (fan_in,) if combine == "cols" else (fan_out,),
        "magnitude_r": (fan_out,),
        "magnitude_c": (fan_in,),
    }
    wanted = _FACTORS[form] + _MAGNITUDES[combine]
    missing = [p for p in wanted if p not in tensors]
    unused = [p for p in tensors if p not in wanted]
    if missing or unused:
        raise ValueError(
            f"{where}: a {config.adapter_type!r} adapter needs exactly {list(wanted)}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {unused}" if unused else "")
        )
    for name in wanted:
        if tuple(tensors[name].shape) != expected[name]:
            raise ValueError(
                f"{where}: {name} has shape {tuple(tensors[name].shape)}, expected {expected[name]} "
                f"(rank {r}, weight {tuple(base.shape)})"
            )


def _read_svd_bases(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    bases = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(bases, dict):
        raise ValueError(f"{path}: expected a dict of '<prefix><layer>.weight' -> {{'U', 'V'}}")
    return bases


def _svd_bases(base: torch.Tensor, rank: int, stored: dict | None, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Leading left/right singular vectors (fan_out, r), (fan_in, r) of the base weight, in float32."""
    fan_out, fan_in = base.shape[0], base[0].numel()
    if stored is not None:
        u, v = stored["U"][:, :rank].float(), stored["V"][:, :rank].float()
        if u.shape != (fan_out, rank) or v.shape != (fan_in, rank):
            raise ValueError(f"{where}: stored SVD bases have shapes {tuple(u.shape)}, {tuple(v.shape)}")
    else:
        # Official convention: reduced SVD on CPU in float32, each U column signed so that its
        # largest-magnitude entry is positive (V columns flipped with it).
        u, _, vh = torch.linalg.svd(base.detach().reshape(fan_out, -1).cpu().float(), full_matrices=False)
        rows = u.abs().argmax(dim=0)
        signs = u[rows, torch.arange(u.shape[1])].sign()
        signs[signs == 0] = 1
        u, v = (u * signs)[:, :rank], (vh * signs[:, None])[:rank].T
    if u.shape[1] < rank:
        raise ValueError(f"{where}: rank {rank} exceeds the weight's {u.shape[1]} singular vectors")
    return u.contiguous().to(base.device), v.contiguous().to(base.device)


# --------------------------------------------------------------------------------------- run-time control


def _adapters(model) -> Iterator[tuple[nn.Module, LayerAdapter]]:
    for root in _targets(model).values():
        for module in root.modules():
            if parametrize.is_parametrized(module, "weight"):
                for p in module.parametrizations.weight:
                    if isinstance(p, LayerAdapter):
                        yield module, p


def loaded_loras(model) -> list[Lora]:
    """The adapters on ``model``, in load (= stacking) order."""
    found = {id(a.lora): a.lora for _, a in _adapters(model)}
    return sorted(found.values(), key=lambda lora: lora.order)


def _resolve(model, which: Lora | int) -> Lora:
    loaded = loaded_loras(model)
    if isinstance(which, Lora):
        if not any(lora is which for lora in loaded):
            raise ValueError(f"LoRA {which.name!r} is not loaded on this model")
        return which
    if isinstance(which, bool) or not isinstance(which, int) or not -len(loaded) <= which < len(loaded):
        raise IndexError(f"no LoRA at index {which!r} ({len(loaded)} loaded)")
    return loaded[which]


def _check_strength(strength: float) -> float:
    value = float(strength)
    if not math.isfinite(value):
        raise ValueError(f"LoRA strength must be finite, got {strength!r}")
    return value


def set_lora_strength(model, which: Lora | int | None, strength: float) -> None:
    """Set one adapter's strength (handle or load index), or every adapter's with ``which=None``."""
    value = _check_strength(strength)
    for lora in loaded_loras(model) if which is None else [_resolve(model, which)]:
        lora.strength = value


def unload_lora(model, which: Lora | int) -> None:
    """Detach one adapter; layers left without adapters get their original weight parameter back."""
    lora = _resolve(model, which)
    modules = {id(m): m for m, a in _adapters(model) if a.lora is lora}
    for module in modules.values():
        chain = module.parametrizations.weight
        for i in reversed(range(len(chain))):
            if isinstance(chain[i], LayerAdapter) and chain[i].lora is lora:
                del chain[i]
        if len(chain) == 0:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
