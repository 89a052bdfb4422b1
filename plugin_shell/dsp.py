"""Pure audio helpers for placing generated audio on a timeline: loop wraps, joins, exact lengths.

Audio is float32 (channels, samples); nothing here modifies its input.
"""

from __future__ import annotations

import numpy as np

from sa3_engine.audio import equal_power_fade


def seam_discontinuity(loop: np.ndarray, window: int = 512) -> float:
    """How much the wrap from a loop's last sample to its first stands out.

    The jump across the wrap divided by the mean absolute sample-to-sample difference over the
    `window` samples on each side of it (the worst channel). A continuous wrap scores about 1
    (pi/2 for a sine through zero); a click scores many times more. Silence with no jump is 0.
    """
    if loop.ndim != 2 or loop.shape[1] < 4:
        raise ValueError(f"loop: expected (channels, samples) with at least 4 samples, got {loop.shape}")
    window = max(2, min(window, loop.shape[1] // 2))
    jump = np.abs(loop[:, 0].astype(np.float64) - loop[:, -1])
    steps = np.concatenate([np.diff(loop[:, -window:], axis=1), np.diff(loop[:, :window], axis=1)], axis=1)
    typical = np.abs(steps.astype(np.float64)).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(jump == 0, 0.0, jump / typical)
    return float(ratio.max())


def wrap_crossfade(audio: np.ndarray, length: int, crossfade: int) -> np.ndarray:
    """A seamless loop of exactly `length` samples from audio generated past the loop end.

    The overflow just past `length` is what naturally follows the loop's last sample, so it is
    crossfaded (equal power) into the head: the wrap then continues as the audio did, and the head
    returns to its own material within `crossfade` samples. The length never changes.
    """
    if audio.shape[1] < length + crossfade:
        raise ValueError(f"audio: need {length + crossfade} samples for the wrap crossfade, got {audio.shape[1]}")
    loop = audio[:, :length].copy()
    fade_in, fade_out = equal_power_fade(crossfade)
    loop[:, :crossfade] = audio[:, length : length + crossfade] * fade_out + loop[:, :crossfade] * fade_in
    return loop


def smooth_join(before: np.ndarray, after: np.ndarray, length: int) -> np.ndarray:
    """`after` adjusted to leave off where `before` ends, for clips placed back to back.

    The step from `before`'s last sample (extrapolated along its last slope) to `after`'s first is
    removed by an offset that fades out over `length` samples. The offset's gain is a raised-cosine
    half that is exactly 1 at the first sample (a crossfade's gains are not), so the join is
    continuous. A model's continuation is generated against its own reconstruction of the source,
    so its first sample can jump away from the untouched source; nothing past `length` changes.
    """
    slope = before[:, -1] - before[:, -2] if before.shape[1] > 1 else 0.0
    step = before[:, -1] + slope - after[:, 0]
    n = min(length, after.shape[1])
    fade = 0.5 * (1.0 + np.cos(np.pi * np.arange(n) / n))
    out = after.copy()
    out[:, :n] += (step[:, None] * fade).astype(out.dtype)
    return out


def fit(audio: np.ndarray, length: int) -> np.ndarray:
    """Pad with silence or trim to exactly `length` samples (resampling can be a sample off)."""
    if audio.shape[1] >= length:
        return audio[:, :length]
    return np.pad(audio, ((0, 0), (0, length - audio.shape[1])))
