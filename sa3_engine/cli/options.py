"""Argument types shared by the commands: each checks a value in the user's units, so a bad one is a
one-line error naming the option (``sa3 demo: error: argument --bars: ...``) before anything runs."""

from __future__ import annotations

import argparse
import math


def _number(text: str, kind=float):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def seconds(text: str) -> float:
    """A time position in seconds, 0 or later."""
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def bpm(text: str) -> float:
    value = _number(text)
    if not 1 <= value <= 999:
        raise argparse.ArgumentTypeError(f"expected a tempo between 1 and 999 bpm, got {text!r}")
    return value


def noise_level(text: str) -> float:
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a level in (0, 1], got {text!r}")
    return value


def cfg_scale(text: str) -> float:
    from sa3_engine.generation.request import MAX_CFG_SCALE

    value = _number(text)
    if not 0 <= value <= MAX_CFG_SCALE:
        raise argparse.ArgumentTypeError(f"expected a guidance scale from 0 to {MAX_CFG_SCALE:g}, got {text!r}")
    return value


def sample_rate(text: str) -> int:
    from sa3_engine.audio import check_sample_rate

    try:
        return check_sample_rate(_number(text, int), "sample rate")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("sample rate: ")) from None


def meter(text: str):
    from bridge.timeline import Meter

    try:
        return Meter.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (e.g. 4/4, 6/8, 7/8)") from None


def resolve_model(model: str, models_dir=None):
    """The model found offline (``weights.registry.resolve``), before anything is read or written; a
    missing or unknown model is a ValueError naming ``--model``."""
    from sa3_engine.weights.registry import resolve

    try:
        return resolve(model, models_dir)
    except (ValueError, OSError) as exc:
        raise ValueError(f"--model: {str(exc).removeprefix('model: ')}") from None
