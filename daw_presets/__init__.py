"""Presets shipped as TOML data: per-DAW defaults (`daws/`), SA3 prompt templates (`prompts/`) and
pedalboard render chains (`chains/`). Each file is one preset, named by its file stem, and is
checked by `daw_presets.schema.validate` when loaded.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import tomllib
from collections.abc import Sequence
from fractions import Fraction
from importlib.resources import files
from pathlib import Path
from typing import Any

import pedalboard

from daw_presets.schema import (
    ChainPreset,
    DawPreset,
    EffectSpec,
    PresetError,
    PromptTemplate,
    effect_specs,
    make_plugin,
    template_slots,
    validate,
)

__all__ = [
    "ChainPreset",
    "DawPreset",
    "EffectSpec",
    "PresetError",
    "PromptTemplate",
    "build_chain",
    "build_effects",
    "effect_specs",
    "list_presets",
    "load_preset",
    "load_preset_file",
    "render_clip_name",
    "render_file_name",
    "render_prompt",
    "run_presets_cli",
]

Preset = DawPreset | PromptTemplate | ChainPreset

FOLDERS = {"daw": "daws", "prompt": "prompts", "chain": "chains"}
CLIP_NAME_MAX = 64  # sa3-ableton-extension's limit; long prompts make unreadable clip names anyway
FILE_SLOT_MAX = 40
FILE_NAME_MAX = 160


def _folder(kind: str):
    if kind not in FOLDERS:
        raise ValueError(f"unknown preset kind {kind!r}; kinds are {', '.join(FOLDERS)}")
    return files(__name__) / FOLDERS[kind]


def _parse(kind: str, name: str, text: str, source: str) -> Preset:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(source, "(file)", f"not valid TOML: {exc}") from None
    return validate(kind, name, data, source)


def list_presets(kind: str | None = None) -> list[tuple[str, str]]:
    """(kind, name) of every shipped preset, or of one kind."""
    kinds = FOLDERS if kind is None else [kind]
    return [
        (k, entry.name.removesuffix(".toml"))
        for k in kinds
        for entry in sorted(_folder(k).iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".toml")
    ]


def load_preset(kind: str, name: str) -> Preset:
    """A shipped preset, validated: `load_preset("daw", "reaper")`."""
    folder = _folder(kind)
    available = [n for k, n in list_presets(kind)]
    if name not in available:
        raise ValueError(f"no {kind} preset {name!r}; available: {', '.join(available)}")
    return _parse(
        kind,
        name,
        (folder / f"{name}.toml").read_text(encoding="utf-8"),
        f"daw_presets/{folder.name}/{name}.toml",
    )


def load_preset_file(kind: str, path: str | os.PathLike) -> Preset:
    """A preset of `kind` from any file (a user's own presets, a render project)."""
    _folder(kind)
    path = Path(path)
    return _parse(kind, path.stem, path.read_text(encoding="utf-8"), str(path))


# -- filling patterns --------------------------------------------------------------------------


def _slot_text(name: str, value: Any) -> str:
    if name == "bpm":
        # Whole-number bpm in text, rounded half up (127.5 -> 128), the way SA3's training prompts
        # write it; the exact tempo travels beside the prompt (sidecars), never through it.
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"slot 'bpm' must be a number, got {value!r}")
        return str(math.floor(value + Fraction(1, 2)))
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
        return str(int(value)) if value == int(value) else f"{float(value):g}"
    return str(value)


def _fill(pattern: str, values: dict[str, Any], what: str) -> str:
    texts = {}
    for slot in template_slots(pattern):
        if slot not in values:
            raise ValueError(f"{what} needs slot {slot!r}; given: {', '.join(sorted(values)) or 'none'}")
        texts[slot] = _slot_text(slot, values[slot])
        if not texts[slot].strip():
            raise ValueError(f"{what}: slot {slot!r} is empty")
    return pattern.format_map(texts)


def render_prompt(template: PromptTemplate | str, **slots: Any) -> str:
    """The prompt text: `template` filled part by part (its parts are separated by commas).

    A slot that is missing, None or blank takes the template's default; a part whose slots are all
    still empty is dropped, so a producer who set no key gets no "Key:" tag rather than an error.
    Extra slots are ignored, so callers can pass the same musical context (bpm, key, meter, bars,
    prompt) to every template.
    """
    pattern, defaults = (
        (template.template, template.defaults) if isinstance(template, PromptTemplate) else (template, {})
    )
    texts = {}
    for slot in template_slots(pattern):
        value = slots.get(slot)
        texts[slot] = ("" if value is None else _slot_text(slot, value).strip()) or defaults.get(slot, "")
    parts = [
        part.format_map(texts).strip()
        for part in pattern.split(",")
        if not template_slots(part) or any(texts[slot] for slot in template_slots(part))
    ]
    return ", ".join(part for part in parts if part)


def _file_safe(slot: str, text: str) -> str:
    """Letters, digits, '.', '_' and '-' only; a value with nothing usable left becomes the slot name."""
    return re.sub(r"[^\w.-]+", "-", text).strip("-.")[:FILE_SLOT_MAX].rstrip("-.") or slot


def render_file_name(daw: DawPreset, **slots: Any) -> str:
    """A file name (without extension) from the DAW's pattern; every slot is made file-system safe."""
    safe = {key: _file_safe(key, _slot_text(key, value)) for key, value in slots.items()}
    return _fill(daw.file_name, safe, f"file_name of {daw.source}")[:FILE_NAME_MAX]


def render_clip_name(daw: DawPreset, **slots: Any) -> str:
    """The clip name shown in the DAW, on one line and at most CLIP_NAME_MAX characters."""
    name = " ".join(_fill(daw.clip_name, slots, f"clip_name of {daw.source}").split())
    return name if len(name) <= CLIP_NAME_MAX else name[: CLIP_NAME_MAX - 1] + "…"


# -- chains ------------------------------------------------------------------------------------


def build_effects(specs: Sequence[EffectSpec], source: str, where: str) -> list[pedalboard.Plugin]:
    """New pedalboard plugins for checked specs (plugins keep state, so every board gets its own)."""
    return [make_plugin(spec, source, f"{where}[{i}]") for i, spec in enumerate(specs)]


def build_chain(chain: str | ChainPreset) -> pedalboard.Pedalboard:
    """A pedalboard for a shipped chain name or a loaded ChainPreset."""
    preset = load_preset("chain", chain) if isinstance(chain, str) else chain
    return pedalboard.Pedalboard(build_effects(preset.effects, preset.source, "effects"))


# -- listing -----------------------------------------------------------------------------------


def run_presets_cli(kind: str | None = None) -> str:
    """The text `sa3 presets [KIND]` prints: every preset of each kind with a one-line summary."""
    lines: list[str] = []
    shown_kind = None
    for k, name in list_presets(kind):
        if k != shown_kind:
            lines.append(f"{k} presets ({FOLDERS[k]}/):")
            shown_kind = k
        lines.append(f"  {name:<18} {load_preset(k, name).summary()}")
    return "\n".join(lines)
