"""Strict loading of released safetensors checkpoints into our modules.

Our module paths equal the official state-dict keys, so no renaming happens: a full SA3
``model.safetensors`` loads into ``SA3Model`` as is (``model.model.``, ``conditioner.conditioners.``,
``pretransform.model.``), a standalone SAME file loads into the autoencoder, and ``prefix`` selects one
part of a bigger file (e.g. ``pretransform.model.`` for the autoencoder of a full checkpoint). Every
selected tensor must be used and shaped as the model expects; anything else raises ``CheckpointError``
listing the offending keys. Tensors are read one at a time with ``safe_open``; build the module on the
``meta`` device so the loaded tensors are assigned instead of copied (no second full-size copy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

_LISTED = 20  # keys shown per category in a mismatch error

# What floating-point tensors are cast to: one dtype, a rule from the (prefix-stripped) key to a dtype, or
# None to keep the stored dtype.
DtypeRule = torch.dtype | Callable[[str], torch.dtype] | None


class CheckpointError(ValueError):
    """A checkpoint file is unreadable or does not match the model it is loaded into."""


def _listing(title: str, items: list[str]) -> str:
    shown = "\n".join(f"  {item}" for item in items[:_LISTED])
    more = f"\n  ... and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return f"{title} ({len(items)}):\n{shown}{more}"


def mismatch_report(
    source: str, missing: list[str], unexpected: list[str], misshaped: list[tuple[str, tuple, tuple]]
) -> str:
    """The error text for a checkpoint that does not fit: counts, then the first keys of each kind."""
    lines = [f"{source} does not match the model: {len(missing)} missing, {len(unexpected)} unexpected, "
             f"{len(misshaped)} mis-shaped"]
    if missing:
        lines.append(_listing("missing (in the model, not in the checkpoint)", missing))
    if unexpected:
        lines.append(_listing("unexpected (in the checkpoint, not in the model)", unexpected))
    if misshaped:
        rows = [f"{key}: checkpoint {list(ckpt)} vs model {list(model)}" for key, ckpt, model in misshaped]
        lines.append(_listing("mis-shaped", rows))
    return "\n".join(lines)


def _as_paths(files: str | Path | Sequence[str | Path]) -> list[Path]:
    paths = [Path(files)] if isinstance(files, (str, Path)) else [Path(f) for f in files]
    if not paths:
        raise CheckpointError("no checkpoint file given")
    for path in paths:
        if not path.is_file():
            raise CheckpointError(f"checkpoint file not found: {path}")
    return paths


def load_weights(
    module: nn.Module,
    files: str | Path | Sequence[str | Path],
    *,
    prefix: str = "",
    dtype: DtypeRule = torch.float32,
    device: torch.device | str = "cpu",
) -> None:
    """Load the tensors whose key starts with ``prefix`` (stripped) into ``module``, strictly.

    Floating-point tensors are cast to ``dtype`` (a dtype, ``dtype(key)`` for a per-tensor choice, or None
    to keep the stored dtype), all moved to ``device``.
    Keys outside ``prefix`` are ignored; inside it, missing, unexpected or mis-shaped keys raise.
    """
    paths = _as_paths(files)
    expected = {key: tuple(t.shape) for key, t in module.state_dict().items()}
    with ExitStack() as stack:
        handles = [stack.enter_context(_open(path)) for path in paths]
        located: dict[str, tuple[object, str]] = {}
        for path, handle in zip(paths, handles, strict=True):
            for key in handle.keys():
                if not key.startswith(prefix):
                    continue
                name = key[len(prefix) :]
                if name in located:
                    raise CheckpointError(f"key {key!r} appears in more than one file ({path})")
                located[name] = (handle, key)
        stored = {name: tuple(handle.get_slice(key).get_shape()) for name, (handle, key) in located.items()}
        missing = sorted(set(expected) - set(stored))
        unexpected = sorted(set(stored) - set(expected))
        misshaped = sorted((k, stored[k], expected[k]) for k in set(stored) & set(expected) if stored[k] != expected[k])
        if missing or unexpected or misshaped:
            source = ", ".join(str(p) for p in paths) + (f" (keys under {prefix!r})" if prefix else "")
            raise CheckpointError(mismatch_report(source, missing, unexpected, misshaped))
        state = {}
        for name, (handle, key) in located.items():
            tensor = handle.get_tensor(key)
            cast = tensor.dtype
            if dtype is not None and tensor.is_floating_point():
                cast = dtype(name) if callable(dtype) else dtype
            state[name] = tensor.to(device=device, dtype=cast)
    module.load_state_dict(state, strict=True, assign=True)
    left_on_meta = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left_on_meta:  # a non-persistent buffer the checkpoint cannot fill
        raise CheckpointError(f"tensors still on the meta device after loading: {left_on_meta[:_LISTED]}")


def _open(path: Path):
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds for corrupt files
        raise CheckpointError(f"cannot read {path} as safetensors: {exc}") from exc
