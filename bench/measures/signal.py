"""Estimators on audio alone: tempo, key, tonal vs noisy, clicks at joins, loop seams.

Audio is ``(channels, samples)`` float as everywhere in the engine. Tempo, chroma, f0 and spectral
flatness come from librosa (an implementation we did not write); the click and seam measures are ours,
simple enough to read in full here, and every one is checked on synthetic clips with known ground
truth (``judge.validate`` and ``tests/test_measures.py``).
"""

from __future__ import annotations

import warnings

import librosa
import numpy as np
import scipy.stats

# The prompts' tempo range: the generator draws 70..180 BPM, so the estimator's prior is uniform there
# (librosa's default is a log-normal around 120 BPM). Octave ambiguity inside the range remains.
TEMPO_RANGE = (70.0, 180.0)
TEMPO_TOLERANCE = 0.03
LOOP_TILE_SECONDS = 16.0  # a loop is repeated to at least this long before its tempo is estimated
HOP = 512


def mono(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    return audio.mean(axis=0) if audio.ndim == 2 else audio


def tiled(audio: np.ndarray, seconds: float, sr: int) -> np.ndarray:
    """A loop repeated end to start until it lasts at least ``seconds`` (mono)."""
    y = mono(audio)
    return np.tile(y, int(np.ceil(seconds * sr / max(len(y), 1))))


# ------------------------------------------------------------------------------------------------ tempo


def tempo_bpm(audio: np.ndarray, sr: int, *, loop: bool) -> float:
    """librosa's tempo estimate (onset-strength autocorrelation, ``librosa.feature.tempo``) with a uniform
    prior over ``TEMPO_RANGE``; a loop is first repeated to ``LOOP_TILE_SECONDS``, as it would play."""
    y = tiled(audio, LOOP_TILE_SECONDS, sr) if loop else mono(audio)
    envelope = librosa.onset.onset_strength(y=y, sr=sr, hop_length=HOP)
    prior = scipy.stats.uniform(TEMPO_RANGE[0], TEMPO_RANGE[1] - TEMPO_RANGE[0])
    return float(librosa.feature.tempo(onset_envelope=envelope, sr=sr, hop_length=HOP, prior=prior)[0])


TEMPO_VERDICTS = ("strict", "octave", "3:2", "other")


def tempo_verdict(estimate: float, bpm: float) -> str:
    """``strict``: within 3 % of the BPM (the pass criterion); ``octave``: within 3 % of twice or half of
    it; ``3:2``: of 2/3, 4/3, 3/2 or 3/4 of it (the dotted-quarter pulse 6/8 is felt in); else ``other``."""
    def near(factor: float) -> bool:
        return abs(estimate / (bpm * factor) - 1.0) <= TEMPO_TOLERANCE

    if near(1.0):
        return "strict"
    if near(2.0) or near(0.5):
        return "octave"
    if any(near(f) for f in (2 / 3, 4 / 3, 3 / 2, 3 / 4)):
        return "3:2"
    return "other"


# -------------------------------------------------------------------------------------------------- key

# Krumhansl-Kessler probe-tone profiles (Krumhansl 1990), tonic first.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
MINOR_LIKE = ("minor", "dorian", "phrygian", "harmonic minor", "minor pentatonic")


def key_from_histogram(histogram: np.ndarray) -> tuple[int, str]:
    """(tonic pitch class, "major" | "minor"): the best Pearson correlation of a 12-bin pitch-class
    histogram with the 24 rotations of the KK profiles (the Krumhansl-Schmuckler algorithm)."""
    h = np.asarray(histogram, dtype=np.float64)
    if not np.isfinite(h).all() or h.std() == 0:
        return 0, "major"  # silence or a flat histogram: no key; counted as whatever C major matches
    best = (-2.0, 0, "major")
    for mode, profile in (("major", KK_MAJOR), ("minor", KK_MINOR)):
        for tonic in range(12):
            r = float(np.corrcoef(h, np.roll(profile, tonic))[0, 1])
            if r > best[0]:
                best = (r, tonic, mode)
    return best[1], best[2]


def chroma_histogram(audio: np.ndarray, sr: int) -> np.ndarray:
    """``librosa.feature.chroma_cqt`` summed over time; tuning fixed at A440 (the data is tuned there)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns about short clips / empty filters
        chroma = librosa.feature.chroma_cqt(y=mono(audio), sr=sr, tuning=0.0, hop_length=2048)
    return chroma.sum(axis=1)


def f0_histogram(audio: np.ndarray, sr: int, fmin: float, fmax: float) -> np.ndarray:
    """Pitch classes of ``librosa.yin``'s f0 over the louder frames, weighted by their RMS: a note-duration
    histogram, the input the KK profiles were made for (monophonic lines only)."""
    y = mono(audio)
    f0 = librosa.yin(y, fmin=fmin, fmax=fmax, sr=sr, frame_length=4096, hop_length=1024)
    rms = librosa.feature.rms(y=y, frame_length=4096, hop_length=1024)[0][: len(f0)]
    keep = (rms > 0.1 * rms.max()) & np.isfinite(f0)
    if not keep.any():
        return np.zeros(12)
    pcs = np.round(librosa.hz_to_midi(f0[keep])).astype(int) % 12
    return np.bincount(pcs, weights=rms[keep], minlength=12)


F0_RANGES = {"bass": (30.0, 500.0), "lead": (150.0, 2000.0)}
KEY_ESTIMATORS = ("chroma_kk", "f0_kk")


def estimate_key(audio: np.ndarray, sr: int, estimator: str, category: str) -> tuple[int, str]:
    if estimator == "chroma_kk":
        return key_from_histogram(chroma_histogram(audio, sr))
    if estimator == "f0_kk":
        return key_from_histogram(f0_histogram(audio, sr, *F0_RANGES[category]))
    raise ValueError(f"unknown key estimator {estimator!r}")


KEY_VERDICTS = ("exact", "relative", "fifth", "other")


def key_verdict(tonic: int, mode: str, true_tonic: int) -> str:
    """``exact``: the estimated tonic is the prompt's (the pass rule; mode ignored); ``relative``: the
    relative major/minor of it (estimated major a minor third above, or minor a minor third below);
    ``fifth``: a fifth above or below; else ``other``."""
    interval = (tonic - true_tonic) % 12
    if interval == 0:
        return "exact"
    if (mode == "major" and interval == 3) or (mode == "minor" and interval == 9):
        return "relative"
    if interval in (5, 7):
        return "fifth"
    return "other"


# ------------------------------------------------------------------------------------- tonal vs noisy


def band_flatness(audio: np.ndarray, sr: int, n_fft: int = 16384) -> float:
    """Median over the loud frames (within 13 dB of the loudest) of librosa's spectral flatness computed
    inside the band holding the frame's middle 90 % of energy (at least an octave around its median
    frequency). Full-band flatness calls band-limited noise (a dark room tone) tonal; inside its own band
    noise stays flat and a tone stays peaky. 2.7 Hz bins resolve sub booms too."""
    y = mono(audio)
    if len(y) < n_fft:
        y = np.pad(y, (0, n_fft - len(y)))
    power = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=n_fft // 4)) ** 2
    energy = power.sum(axis=0)
    if energy.max() <= 0:
        return 1.0  # digital silence: not tonal
    values = []
    for frame in np.flatnonzero(energy > 0.05 * energy.max()):
        p = power[:, frame]
        cdf = np.cumsum(p) / p.sum()
        centre = int(np.searchsorted(cdf, 0.5))
        lo = min(int(np.searchsorted(cdf, 0.05)), int(centre / 1.414))
        hi = max(int(np.searchsorted(cdf, 0.95)), int(centre * 1.414)) + 1
        values.append(float(librosa.feature.spectral_flatness(S=p[lo:hi, None], power=1.0)[0, 0]))
    return float(np.median(values))


def choose_threshold(values: np.ndarray, tonal: np.ndarray) -> float:
    """The flatness threshold (tonal below it) with the best accuracy on labelled clips: the geometric
    midpoint between neighbouring sorted values, ties broken towards the middle of the best run."""
    values, tonal = np.asarray(values, dtype=np.float64), np.asarray(tonal, dtype=bool)
    ordered = np.sort(np.log(np.maximum(values, 1e-12)))
    cuts = np.concatenate([[ordered[0] - 1], (ordered[1:] + ordered[:-1]) / 2, [ordered[-1] + 1]])
    logs = np.log(np.maximum(values, 1e-12))
    accuracy = np.array([np.mean((logs < c) == tonal) for c in cuts])
    best = np.flatnonzero(accuracy == accuracy.max())
    return float(np.exp(cuts[best[len(best) // 2]]))


# ------------------------------------------------------------------------------- clicks, joins, seams


SILENT_DBFS = -60.0


def is_silent(audio: np.ndarray) -> bool:
    """RMS under -60 dBFS: nothing to judge (a silent loop has no seam and no click, and no tempo)."""
    rms = float(np.sqrt(np.mean(np.square(np.asarray(audio, dtype=np.float64)))))
    return rms < 10 ** (SILENT_DBFS / 20)


def steps(audio: np.ndarray) -> np.ndarray:
    """|x[n] - x[n-1]| per sample, the largest over channels: ``(samples - 1,)``."""
    audio = np.atleast_2d(np.asarray(audio, dtype=np.float64))
    return np.abs(np.diff(audio, axis=1)).max(axis=0)


def step_scale(audio: np.ndarray) -> dict[str, float]:
    """The distribution of a recording's own sample-to-sample steps: 99th, 99.9th percentile and max."""
    s = steps(audio)
    return {"p99": float(np.percentile(s, 99)), "p999": float(np.percentile(s, 99.9)), "max": float(s.max())}


def boundary_step(audio: np.ndarray, boundary: int) -> float:
    """|x[b] - x[b-1]| at sample ``b`` (the largest over channels)."""
    audio = np.atleast_2d(np.asarray(audio, dtype=np.float64))
    return float(np.abs(audio[:, boundary] - audio[:, boundary - 1]).max())


SEAM_WINDOW = 2048


def _log_spectra(frames: np.ndarray, floor: float) -> np.ndarray:
    window = np.hanning(frames.shape[-1])
    magnitude = np.abs(np.fft.rfft(frames * window, axis=-1))
    return 20 * np.log10(np.maximum(magnitude, floor))


def spectral_seam(audio: np.ndarray, window: int = SEAM_WINDOW) -> float:
    """How much the spectrum jumps where a loop wraps, against how much it jumps inside it (ours).

    At a position n, the jump is the mean absolute difference in dB (floored at -80 dB under the loudest
    bin) between the spectrum of the ``window`` samples ending at n and of those starting at n. The
    result is the jump across the wrap (the loop's last window against its first) over the median jump
    at every half window inside the loop. Loops that start on a downbeat jump at the wrap by design
    (the downbeat's onset), so read it against the same measure on the training loops.
    """
    y = mono(audio).astype(np.float64)
    if len(y) < 4 * window:
        raise ValueError(f"spectral_seam: the loop ({len(y)} samples) is shorter than 4 windows ({window})")
    views = np.lib.stride_tricks.sliding_window_view(y, window)
    positions = np.arange(window, len(y) - window + 1, window // 2)
    before, after = views[positions - window], views[positions]
    wrap_before, wrap_after = y[-window:][None], y[:window][None]
    top = np.abs(np.fft.rfft(views[:: window // 2] * np.hanning(window), axis=-1)).max()
    floor = max(top, 1e-9) * 1e-4
    inside = np.abs(_log_spectra(before, floor) - _log_spectra(after, floor)).mean(axis=1)
    across = np.abs(_log_spectra(wrap_before, floor) - _log_spectra(wrap_after, floor)).mean()
    return float(across / max(float(np.median(inside)), 1e-9))
