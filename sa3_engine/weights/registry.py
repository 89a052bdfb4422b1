"""Model ids and offline discovery: where the files of each SA3 model are on this machine.

Nothing here touches the network. A model is found, in this order, in:

1. an explicit folder (any argument that is a path to a folder);
2. ``models_dir`` (``--models-dir``), laid out ``<models_dir>/<id>/model_config.json`` (the Hugging Face
   repo name also works as the folder name, e.g. ``stable-audio-3-small-music``);
3. the folder named by ``$SA3_MODELS_DIR``, same layout;
4. the Hugging Face cache (``$HF_HUB_CACHE`` / ``$HF_HOME``), the snapshot ``refs/main`` points to first;
5. for ``tiny-random`` only: the cached tiny build (``tiny.py``), written on first use.

``same-s``/``same-l`` may also come from a full SA3 checkpoint that contains them (small-music or
small-sfx / medium), as the official registry does; the autoencoder-only repo is preferred in each place.
When nothing is complete, ``ModelNotFound`` names the missing files, every place looked at, and the
command that fetches the model on a connected machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import scan_cache_dir, try_to_load_from_cache
from huggingface_hub.utils import CacheNotFound

from sa3_engine.models.config import (
    CONFIG_FILENAME,
    TEXT_ENCODER_FILES,
    TEXT_ENCODER_SUBFOLDER,
    WEIGHTS_FILENAME,
    ConfigError,
    ModelNotFound,
    conditioning_config,
    is_autoencoder_config,
    load_config,
)

TINY_ID = "tiny-random"
TINY_DIR_NAME = "tiny-random-v2"


@dataclass(frozen=True)
class ModelSpec:
    id: str
    repo_id: str | None  # None: not downloadable (tiny-random is built locally)
    kind: str  # "dit" (full SA3 model) or "autoencoder"
    description: str
    contained_in: tuple[str, ...] = ()  # full-model ids whose checkpoint includes this autoencoder

    @property
    def repo_name(self) -> str | None:
        return self.repo_id.split("/")[-1] if self.repo_id else None


MODELS: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec("small-music", "stabilityai/stable-audio-3-small-music", "dit", "small, music, post-trained"),
        ModelSpec("small-sfx", "stabilityai/stable-audio-3-small-sfx", "dit", "small, sound effects, post-trained"),
        ModelSpec("medium", "stabilityai/stable-audio-3-medium", "dit", "medium, post-trained"),
        ModelSpec("small-music-base", "stabilityai/stable-audio-3-small-music-base", "dit", "small, music, base"),
        ModelSpec("small-sfx-base", "stabilityai/stable-audio-3-small-sfx-base", "dit", "small, sound effects, base"),
        ModelSpec("medium-base", "stabilityai/stable-audio-3-medium-base", "dit", "medium, base"),
        ModelSpec("same-s", "stabilityai/SAME-S", "autoencoder", "SAME-S autoencoder",
                  contained_in=("small-music", "small-sfx")),
        ModelSpec("same-l", "stabilityai/SAME-L", "autoencoder", "SAME-L autoencoder", contained_in=("medium",)),
        ModelSpec(TINY_ID, None, "dit", "tiny random weights, for tests and wiring (built locally)"),
    )
}


@dataclass(frozen=True)
class ResolvedModel:
    id: str
    config: Path  # model_config.json
    weights: Path  # model.safetensors (a full SA3 checkpoint when an autoencoder came from one)
    text_encoder: Path | None  # T5Gemma folder; None for autoencoders
    source: str  # where it was found, for people

    @property
    def folder(self) -> Path:
        return self.config.parent


@dataclass(frozen=True)
class _Look:
    """One folder looked at, and the files it lacked (empty: complete)."""

    place: str
    folder: Path
    missing: tuple[str, ...]


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (not at import time)."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.environ[name]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def sa3_cache_dir() -> Path:
    """Where this project caches what it builds (the tiny model): ``$SA3_CACHE_DIR`` or ~/.cache/sa3."""
    return Path(os.environ.get("SA3_CACHE_DIR") or Path.home() / ".cache" / "sa3").expanduser()


def tiny_model_path() -> Path:
    """Where the tiny random model is (or will be) built."""
    return sa3_cache_dir() / TINY_DIR_NAME


def text_encoder_subfolder(config: dict) -> str | None:
    """The T5Gemma subfolder a full-model config points to; None when it has no text conditioner."""
    if is_autoencoder_config(config):
        return None
    for spec in conditioning_config(config).get("configs", []):
        if spec.get("type") == "t5gemma":
            return spec.get("config", {}).get("subfolder") or TEXT_ENCODER_SUBFOLDER
    return None


def _check_folder(place: str, folder: Path, needs_text_encoder: bool) -> _Look:
    """Which required files ``folder`` lacks; the text encoder is needed only by full models."""
    missing = [name for name in (CONFIG_FILENAME, WEIGHTS_FILENAME) if not (folder / name).is_file()]
    if needs_text_encoder and not missing:
        try:
            subfolder = text_encoder_subfolder(load_config(folder))
        except ConfigError as exc:
            raise ModelNotFound(f"{folder / CONFIG_FILENAME} is not a usable model config: {exc}") from None
        if subfolder is not None:
            missing += [f"{subfolder}/{name}" for name in TEXT_ENCODER_FILES if not (folder / subfolder / name).is_file()]
    return _Look(place, folder, tuple(missing))


def _resolved(model_id: str, look: _Look, needs_text_encoder: bool) -> ResolvedModel:
    subfolder = text_encoder_subfolder(load_config(look.folder)) if needs_text_encoder else None
    return ResolvedModel(
        id=model_id,
        config=look.folder / CONFIG_FILENAME,
        weights=look.folder / WEIGHTS_FILENAME,
        text_encoder=look.folder / subfolder if subfolder else None,
        source=f"{look.place}: {look.folder}",
    )


def _hf_snapshots(repo_id: str, cache: Path) -> Iterator[Path]:
    """Snapshot folders of ``repo_id`` in the HF cache: the one ``refs/main`` points to, then the newest."""
    if not (cache / f"models--{repo_id.replace('/', '--')}").is_dir():
        return  # not cached at all: spare the scan of the whole cache
    seen = set()
    main = try_to_load_from_cache(repo_id, CONFIG_FILENAME, cache_dir=cache)
    if isinstance(main, str):
        seen.add(Path(main).parent)
        yield Path(main).parent
    try:
        repos = scan_cache_dir(cache).repos
    except CacheNotFound:
        return
    for repo in repos:
        if repo.repo_id == repo_id and repo.repo_type == "model":
            for revision in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
                if revision.snapshot_path not in seen:
                    yield revision.snapshot_path


def _model_dirs(models_dir: str | os.PathLike | None) -> list[tuple[str, Path]]:
    dirs = []
    if models_dir is not None:
        dirs.append(("--models-dir", Path(models_dir).expanduser()))
    if os.environ.get("SA3_MODELS_DIR"):
        dirs.append(("$SA3_MODELS_DIR", Path(os.environ["SA3_MODELS_DIR"]).expanduser()))
    return dirs


def _looks(spec: ModelSpec, models_dir: str | os.PathLike | None, needs_text_encoder: bool) -> Iterator[_Look]:
    """Every candidate folder for ``spec``, in priority order (partial folders included)."""
    for place, root in _model_dirs(models_dir):
        for name in dict.fromkeys(filter(None, (spec.id, spec.repo_name))):
            if (root / name).is_dir():
                yield _check_folder(f"{place} ({name})", root / name, needs_text_encoder)
    if spec.repo_id:
        for snapshot in _hf_snapshots(spec.repo_id, hf_cache_dir()):
            yield _check_folder(f"Hugging Face cache ({spec.repo_id}@{snapshot.name[:8]})", snapshot,
                                needs_text_encoder)


def _download_hint(spec: ModelSpec, models_dir: str | os.PathLike | None) -> str:
    if spec.repo_id is None:
        return ""
    roots = _model_dirs(models_dir)
    target = f" --local-dir {roots[0][1] / spec.id}" if roots else ""
    lines = [
        "To get it, on a machine with internet access run:",
        f"  hf download {spec.repo_id}{target}",
        f"  (older huggingface_hub: huggingface-cli download {spec.repo_id}{target})",
        f"The repo is gated: first accept the licence at https://huggingface.co/{spec.repo_id} and log in "
        "(hf auth login).",
    ]
    if roots:
        lines.append(f"Then copy that folder to {roots[0][1] / spec.id} on this machine.")
    else:
        lines.append("Then copy the Hugging Face cache over, or pass --models-dir / set SA3_MODELS_DIR to a folder "
                     "holding <id>/model_config.json.")
    if spec.contained_in:
        lines.append(f"A full model ({', '.join(spec.contained_in)}) also contains this autoencoder.")
    return "\n".join(lines)


def _not_found(spec: ModelSpec, models_dir, looks: list[_Look]) -> ModelNotFound:
    needed = [CONFIG_FILENAME, WEIGHTS_FILENAME]
    if spec.kind == "dit":
        needed.append(f"{TEXT_ENCODER_SUBFOLDER}/ ({', '.join(TEXT_ENCODER_FILES)})")
    lines = [f"model {spec.id!r} ({spec.description}) is not on this machine; it needs {', '.join(needed)}."]
    if looks:
        lines.append("Looked in:")
        lines += [f"  {look.place}: {look.folder} (missing {', '.join(look.missing)})" for look in looks]
    places = [f"{place} {root}/{spec.id}" for place, root in _model_dirs(models_dir)]
    places.append(f"Hugging Face cache {hf_cache_dir()}")
    lines.append("Searched: " + "; ".join(places))
    hint = _download_hint(spec, models_dir)
    return ModelNotFound("\n".join([*lines, hint] if hint else lines))


def _spec(model_id: str) -> ModelSpec:
    if model_id not in MODELS:
        raise ValueError(f"model: unknown model id {model_id!r}; known ids: {', '.join(MODELS)} "
                         "(or a path to a folder holding model_config.json and model.safetensors)")
    return MODELS[model_id]


def _resolve_folder(folder: Path) -> ResolvedModel:
    look = _check_folder("folder", folder, needs_text_encoder=True)
    if look.missing:
        raise ModelNotFound(f"model folder {folder} lacks {', '.join(look.missing)}")
    return _resolved(folder.name, look, needs_text_encoder=True)


def resolve(model: str, models_dir: str | os.PathLike | None = None, *, build_tiny: bool = True) -> ResolvedModel:
    """The files of ``model`` (an id or a folder path) on this machine, or ``ModelNotFound``.

    ``build_tiny=False`` reports a not-yet-built tiny model as missing instead of building it.
    """
    if model not in MODELS and Path(model).expanduser().is_dir():
        return _resolve_folder(Path(model).expanduser())
    if model not in MODELS and ("/" in model or os.sep in model):
        raise ModelNotFound(f"model: no folder at {model}")
    spec = _spec(model)
    needs_text_encoder = spec.kind == "dit"
    partial: list[_Look] = []
    for candidate in (spec, *(MODELS[i] for i in spec.contained_in)):
        for look in _looks(candidate, models_dir, needs_text_encoder):
            if look.missing:
                partial.append(look)
                continue
            found = _resolved(spec.id, look, needs_text_encoder)
            if candidate is spec:
                return found
            return ResolvedModel(found.id, found.config, found.weights, None, f"inside {candidate.id}, {found.source}")
    if spec.id == TINY_ID:
        return _tiny(build_tiny)
    raise _not_found(spec, models_dir, partial)


def _tiny(build: bool) -> ResolvedModel:
    folder = tiny_model_path()
    if build:
        from sa3_engine.weights.tiny import build_tiny_model  # torch and the model code load only for a build

        build_tiny_model(folder)
    look = _check_folder("tiny build", folder, needs_text_encoder=True)
    if look.missing:
        raise ModelNotFound(f"not built yet; {TINY_ID} is written to {folder} on first use")
    return _resolved(TINY_ID, look, needs_text_encoder=True)
