"""``sa3 models [ID]``: the models found on this machine and, for the missing ones, how to get them."""

from __future__ import annotations

import argparse

from sa3_engine.weights.registry import (
    MODELS,
    TINY_ID,
    ModelNotFound,
    ModelSpec,
    _looks,
    hf_cache_dir,
    resolve,
    tiny_model_path,
)


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("model", nargs="?", help="show one model (id or folder) in detail, with how to get it")
    parser.add_argument("--models-dir", help="folder holding <id>/model_config.json (also $SA3_MODELS_DIR)")


def run(args: argparse.Namespace) -> int:
    if args.model:
        try:
            found = resolve(args.model, args.models_dir, build_tiny=False)
        except (ModelNotFound, ValueError) as exc:
            print(exc)
            return 1
        print(f"{found.id}: found ({found.source})")
        print(f"  config:       {found.config}\n  weights:      {found.weights}")
        print(f"  text encoder: {found.text_encoder or '-'}")
        return 0
    width = max(map(len, MODELS))
    for spec in MODELS.values():
        try:
            status = f"found    {resolve(spec.id, args.models_dir, build_tiny=False).source}"
        except ModelNotFound as exc:
            if spec.id == TINY_ID:  # nothing to download: it is built on first use
                status = f"ready    built on first use into {tiny_model_path()}"
            else:
                status = "missing  " + _missing_summary(spec, args.models_dir, exc)
        print(f"{spec.id:<{width}}  {status}")
    print(f"Hugging Face cache: {hf_cache_dir()}. Run `sa3 models ID` for how to get a missing model.")
    return 0


def _missing_summary(spec: ModelSpec, models_dir, exc: ModelNotFound) -> str:
    """One line: the files lacking in the first partial folder, else what the error says is missing."""
    looks = [look for look in _looks(spec, models_dir, spec.kind == "dit") if look.missing]
    if looks:
        return f"{', '.join(looks[0].missing)} (in {looks[0].folder})"
    if spec.repo_id is None:
        return str(exc)
    return f"not downloaded (needs {spec.repo_id})"
