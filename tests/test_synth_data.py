"""The synthetic training data: determinism, shapes, seamless loops, tempo, key, SFX tonality, captions.

Tempo, pitch and chroma come from librosa (an independent implementation, in the dev extras); the SFX
tonality measure is ours (spectral flatness inside the band the sound occupies), labelled as such.
Each property check has a negative control showing it rejects a clip that lacks the property.
"""

from __future__ import annotations

import json

import librosa
import numpy as np
import pytest

from sa3_engine.audio import read_audio
from sa3_engine.cli import main as sa3_main
from sa3_engine.training.synth import CATEGORIES, SAMPLE_RATE, clip_at, generate_clip, iterate_clips
from sa3_engine.training.synth.core import SCALES, Grid
from sa3_engine.training.synth.sfx import SFX_KINDS, sfx_clip

LOOPS = ("drums", "bass", "lead", "pad", "pluck", "arp")


def clips(category: str, seeds: range) -> list:
    return [generate_clip(np.random.default_rng(seed), category) for seed in seeds]


# ------------------------------------------------------------------------------------- determinism, shape


def test_same_seed_and_index_give_identical_clips():
    a, b = clip_at(11, 3), clip_at(11, 3)
    assert np.array_equal(a.audio, b.audio)
    assert a.captions == b.captions and a.meta == b.meta
    c = clip_at(11, 4)
    assert a.audio.shape != c.audio.shape or not np.array_equal(a.audio, c.audio)
    assert not np.array_equal(clip_at(12, 3).audio[:, :1000], a.audio[:, :1000])


def test_stream_equals_indexed_clips():
    streamed = list(iterate_clips(5, start=2, stop=4))
    for clip, index in zip(streamed, (2, 3), strict=True):
        assert np.array_equal(clip.audio, clip_at(5, index).audio)


@pytest.mark.parametrize("category", CATEGORIES)
def test_shapes_rate_and_lengths(category):
    for clip in clips(category, range(4)):
        assert clip.audio.dtype == np.float32 and clip.audio.ndim == 2 and clip.audio.shape[0] == 2
        assert np.isfinite(clip.audio).all() and 0 < np.abs(clip.audio).max() <= 1.0
        assert 1.0 <= clip.seconds <= 30.0, clip.seconds
        if clip.meta["loop"]:  # a whole number of bars at the stated tempo and meter, to the sample
            grid = Grid(clip.meta["bpm"], clip.meta["meter"], clip.meta["bars"])
            assert clip.audio.shape[1] == grid.samples


# ----------------------------------------------------------------------------------------- loop seams


def wrap_jump_within_own_steps(audio: np.ndarray) -> bool:
    """The jump from the last sample to the first is no larger than the clip's own large steps
    (its 99th percentile of sample-to-sample differences), in every channel."""
    jump = np.abs(audio[:, 0] - audio[:, -1])
    own = np.percentile(np.abs(np.diff(audio, axis=1)), 99, axis=1)
    return bool(np.all(jump <= own))


@pytest.mark.parametrize("category", LOOPS)
def test_loops_wrap_seamlessly(category):
    for clip in clips(category, range(30, 36)):
        assert wrap_jump_within_own_steps(clip.audio), clip.meta
    # control: a lead line cut off at arbitrary points (not a whole loop) has a seam the check sees
    lead = generate_clip(np.random.default_rng(30), "lead").audio
    cuts = [lead[:, : int(lead.shape[1] * f)] for f in np.linspace(0.3, 0.9, 10)]
    assert sum(not wrap_jump_within_own_steps(cut) for cut in cuts) >= 8


# ---------------------------------------------------------------------------------------------- tempo


def estimated_bpm(audio: np.ndarray) -> float:
    """librosa's tempo estimate over the loop repeated to at least 12 s (as it would play)."""
    mono = np.tile(audio.mean(axis=0), int(np.ceil(12 * SAMPLE_RATE / audio.shape[1])))
    envelope = librosa.onset.onset_strength(y=mono, sr=SAMPLE_RATE)
    return float(librosa.feature.tempo(onset_envelope=envelope, sr=SAMPLE_RATE)[0])


def tempo_matches(estimate: float, bpm: float, meter: str) -> bool:
    """Within 3 % of the BPM or of a metrical level of it: half/double time in any meter, and the
    dotted-quarter pulse (2/3, 4/3) that compound and odd meters (6/8, 7/8) are felt in."""
    levels = (0.5, 1.0, 2.0) if meter in ("4/4", "3/4") else (0.5, 2 / 3, 1.0, 4 / 3, 2.0)
    return any(abs(estimate / (bpm * k) - 1) <= 0.03 for k in levels)


def test_drum_onsets_show_the_requested_bpm():
    loops = clips("drums", range(100, 112))
    hits = [tempo_matches(estimated_bpm(c.audio), c.meta["bpm"], c.meta["meter"]) for c in loops]
    assert sum(hits) >= 11, [(c.meta["bpm"], c.meta["meter"]) for c in loops]
    straight = [c for c in loops if c.meta["meter"] == "4/4"]
    if straight:  # control: a 12 % wrong label is rejected
        c = straight[0]
        assert not tempo_matches(estimated_bpm(c.audio), c.meta["bpm"] * 1.12, c.meta["meter"])


# ----------------------------------------------------------------------------------------------- key


def scale_pitch_classes(tonic: int, scale: str, shift: int = 0) -> set[int]:
    return {(tonic + step + shift) % 12 for step in SCALES[scale]}


def f0_pitch_classes(audio: np.ndarray) -> np.ndarray:
    """Pitch class of every clearly pitched frame, from librosa's pYIN-free YIN tracker."""
    f0 = librosa.yin(audio.mean(axis=0), fmin=40, fmax=2000, sr=SAMPLE_RATE, frame_length=4096)
    rms = librosa.feature.rms(y=audio.mean(axis=0), frame_length=4096, hop_length=1024)[0][: len(f0)]
    keep = rms > 0.2 * rms.max()
    return np.round(librosa.hz_to_midi(f0[keep])).astype(int) % 12


def in_scale_share(pcs: np.ndarray, allowed: set[int]) -> float:
    return float(np.isin(pcs, sorted(allowed)).mean())


@pytest.mark.parametrize("category", ["bass", "lead"])
def test_melodic_pitch_histogram_peaks_on_the_scale(category):
    for clip in clips(category, range(40, 46)):
        m = clip.meta
        pcs = f0_pitch_classes(clip.audio)
        scale = scale_pitch_classes(m["key"], m["scale"])
        assert in_scale_share(pcs, scale) >= 0.8, (m, np.bincount(pcs, minlength=12))
        assert int(np.bincount(pcs, minlength=12).argmax()) in scale
        assert in_scale_share(pcs, scale_pitch_classes(m["key"], m["scale"], shift=6)) < 0.8  # control: tritone away


@pytest.mark.parametrize("category", ["pad", "pluck", "arp"])
def test_harmonic_chroma_peaks_on_the_scale(category):
    """Chords and arps: the two strongest chroma bins are scale notes and most chroma energy is in the
    scale. (Not the full key: a one-bar loop may hold one triad, which fits several keys; and overtones
    put some energy outside the scale, e.g. the 5th harmonic's major third.)"""
    for clip in clips(category, range(50, 56)):
        m = clip.meta
        chroma = librosa.feature.chroma_cqt(y=clip.audio.mean(axis=0), sr=SAMPLE_RATE, tuning=0.0,
                                            hop_length=4096).sum(axis=1)
        chroma = chroma / chroma.sum()
        scale = scale_pitch_classes(m["key"], m["scale"])
        tritone_away = scale_pitch_classes(m["key"], m["scale"], shift=6)  # control: a wrong key scores less
        assert set(np.argsort(chroma)[-2:].tolist()) <= scale, (m, np.round(chroma, 2))
        assert chroma[sorted(scale)].sum() >= 0.6
        assert chroma[sorted(scale)].sum() > chroma[sorted(tritone_away)].sum()


# ------------------------------------------------------------------------------------------- SFX


def band_flatness(audio: np.ndarray) -> float:
    """Our measure: median over loud frames of the spectral flatness (geometric / arithmetic mean of
    power) inside the band holding the frame's middle 90 % of energy (at least an octave wide). Tonal sounds are peaky (near 0),
    noise is flat (towards ~0.5) even when it is band-limited."""
    spec = np.abs(librosa.stft(audio.mean(axis=0), n_fft=16384, hop_length=4096)) ** 2  # 2.7 Hz bins: sub booms too
    energy = spec.sum(axis=0)
    values = []
    for frame in np.flatnonzero(energy > 0.05 * energy.max()):
        p = spec[:, frame]
        cdf = np.cumsum(p) / p.sum()
        centre = np.searchsorted(cdf, 0.5)  # at least an octave around the median bin, even for a pure tone
        lo = min(np.searchsorted(cdf, 0.05), int(centre / 1.414))
        hi = max(np.searchsorted(cdf, 0.95), int(centre * 1.414)) + 1
        band = p[lo:hi] + 1e-20
        values.append(np.exp(np.log(band).mean()) / band.mean())
    return float(np.median(values))


def test_sfx_tonal_and_noisy_are_told_apart_by_flatness():
    for kind in SFX_KINDS:
        for seed in range(3):
            clip = sfx_clip(np.random.default_rng(seed), kind)
            flatness = band_flatness(clip.audio)
            if clip.meta["tonal"]:
                assert flatness < 0.08, (kind, flatness)
            else:
                assert flatness > 0.15, (kind, flatness)


# ------------------------------------------------------------------------------------------ captions


@pytest.mark.parametrize("category", CATEGORIES)
def test_captions_mention_the_metadata(category):
    for clip in clips(category, range(60, 66)):
        m = clip.meta
        assert clip.caption.startswith("TrackType: SFX" if category == "sfx" else "TrackType: Music")
        for caption in clip.captions:
            assert m["instrument"] in caption
            if category != "sfx":
                assert f"{m['bpm']:g}" in caption and m["genre"].lower() in caption.lower()
            if "key_name" in m:
                assert m["key_name"] in caption


def test_captions_vary_across_seeds_and_paraphrases():
    drums = clips("drums", range(70, 90))
    assert all(len(set(c.captions)) == len(c.captions) == 4 for c in drums)
    assert len({c.caption for c in drums}) == len(drums)
    # the same facts are not always said in one order: the BPM tag moves around
    positions = {c.caption.split(", ").index(next(t for t in c.caption.split(", ") if "BPM" in t.upper()))
                 for c in drums}
    assert len(positions) >= 3
    forms = {("TrackType" in t, t.endswith(".")) for c in drums for t in c.captions}
    assert len(forms) >= 3  # tagged, plain list and sentence forms all occur


# ---------------------------------------------------------------------------------------------- CLI


def test_train_data_command_writes_wav_and_json(tmp_path, capsys):
    out = tmp_path / "data"
    assert sa3_main(["train", "data", "--out", str(out), "--count", "2", "--seed", "9", "--quiet"]) == 0
    for index in (0, 1):
        audio, rate = read_audio(out / f"{index:08d}.wav")
        record = json.loads((out / f"{index:08d}.json").read_text())
        expected = clip_at(9, index)
        assert rate == SAMPLE_RATE and np.array_equal(audio, expected.audio)
        assert record["prompt"] == expected.caption and record["category"] == expected.category
    assert not list(out.glob(".*"))  # no temporary files left behind
    # another seed into the same folder would mix datasets: refused with a message, exit code 2
    assert sa3_main(["train", "data", "--out", str(out), "--count", "2", "--seed", "10", "--quiet"]) == 2
    assert "another dataset" in capsys.readouterr().err
