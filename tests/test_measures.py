"""The estimators of bench/measure_default_model.py on clips whose truth is known.

Each property has a control that must be rejected (a wrong BPM, a cut loop, an inserted step, changed
kept audio). Deterministic, a few seconds; the model itself is not run here.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("librosa")
pytest.importorskip("sklearn")

from bench.measures import data, judge, signal  # noqa: E402
from plugin_shell.dsp import seam_discontinuity  # noqa: E402
from sa3_engine.training.synth.core import SAMPLE_RATE as SR  # noqa: E402
from sa3_engine.training.synth.core import Grid  # noqa: E402
from sa3_engine.training.synth.drums import drum_loop  # noqa: E402
from sa3_engine.training.synth.melodic import bass_loop  # noqa: E402
from sa3_engine.training.synth.sfx import sfx_clip  # noqa: E402


def test_tempo_estimator_recovers_a_drum_loops_bpm():
    loop = drum_loop(np.random.default_rng(0), grid=Grid(120.0, "4/4", 2))
    estimate = signal.tempo_bpm(loop.audio, SR, loop=True)
    assert signal.tempo_verdict(estimate, 120.0) == "strict", estimate
    assert signal.tempo_verdict(estimate, 120.0 * 1.12) == "other"  # control: a 12 % wrong BPM fails


def test_tempo_verdicts_keep_octave_and_3_2_errors_apart():
    assert signal.tempo_verdict(123.0, 120.0) == "strict"
    assert signal.tempo_verdict(240.0, 120.0) == signal.tempo_verdict(61.0, 120.0) == "octave"
    assert signal.tempo_verdict(80.0, 120.0) == "3:2"  # the dotted-quarter pulse of 6/8
    assert signal.tempo_verdict(100.0, 120.0) == "other"


@pytest.mark.parametrize("estimator", signal.KEY_ESTIMATORS)
@pytest.mark.parametrize("tonic, scale", [(9, "minor"), (2, "major")])
def test_key_estimators_recover_a_bass_lines_tonic(estimator, tonic, scale):
    line = bass_loop(np.random.default_rng(0), grid=Grid(100.0, "4/4", 4), key=(tonic, scale))
    found, mode = signal.estimate_key(line.audio, SR, estimator, "bass")
    assert signal.key_verdict(found, mode, tonic) == "exact", (found, mode)
    assert signal.key_verdict(found, mode, (tonic + 1) % 12) != "exact"  # control: a semitone off fails


def test_key_verdicts():
    assert signal.key_verdict(0, "major", 9) == "relative"  # C major heard for A minor
    assert signal.key_verdict(9, "minor", 0) == "relative"  # A minor heard for C major
    assert signal.key_verdict(7, "major", 0) == "fifth"
    assert signal.key_verdict(1, "major", 0) == "other"


def test_krumhansl_profiles_name_their_own_rotation():
    for tonic in (0, 5, 11):
        assert signal.key_from_histogram(np.roll(signal.KK_MAJOR, tonic)) == (tonic, "major")
        assert signal.key_from_histogram(np.roll(signal.KK_MINOR, tonic)) == (tonic, "minor")


def test_flatness_tells_tonal_from_noisy_sfx_and_the_threshold_separates_them():
    clips = [sfx_clip(np.random.default_rng(seed), kind) for seed in range(2)
             for kind in (("ui beep", True), ("impact", True), ("ambience", False), ("whoosh", False))]
    values = np.array([signal.band_flatness(c.audio, SR) for c in clips])
    tonal = np.array([c.meta["tonal"] for c in clips])
    assert values[tonal].max() < values[~tonal].min(), values
    threshold = signal.choose_threshold(values, tonal)
    assert np.array_equal(values < threshold, tonal)
    assert values[tonal].max() < threshold < values[~tonal].min()


def _tone(seconds: float, hz) -> np.ndarray:
    n = int(seconds * SR)
    hz = np.broadcast_to(np.asarray(hz, dtype=np.float64), (n,))
    phase = 2 * np.pi * np.cumsum(hz) / SR
    return np.stack([0.5 * np.sin(phase)] * 2).astype(np.float32)


def test_seam_measures_are_small_for_a_loop_and_large_for_a_cut():
    seamless = _tone(1.0, 441.0)  # exactly 441 cycles: the end continues into the start
    assert seam_discontinuity(seamless) < 2  # one typical step (pi/2 x the mean through a zero crossing)
    assert signal.spectral_seam(seamless) < 2.0
    cut = seamless[:, : int(0.25 * SR / 441) + 441 * 50]  # stops a quarter cycle in, at the peak
    assert seam_discontinuity(cut) > 10
    glide = _tone(2.0, np.geomspace(300.0, 900.0, 2 * SR))  # ends an octave and a half above its start
    assert signal.spectral_seam(glide) > 5 * signal.spectral_seam(seamless)


def test_seam_measures_pass_the_generators_loops():
    loop = drum_loop(np.random.default_rng(1), grid=Grid(120.0, "4/4", 2))
    assert seam_discontinuity(loop.audio) < 1.5
    k = int(np.argmax(np.abs(loop.audio[0, SR // 4:]))) + SR // 4  # control: cut at the loudest sample
    assert seam_discontinuity(loop.audio[:, : k + 1]) > 3


def test_click_measure_flags_an_inserted_step_and_judge_edit_checks_kept_audio():
    source = drum_loop(np.random.default_rng(2), grid=Grid(100.0, "4/4", 2)).audio.astype(np.float64)
    b = source.shape[1] // 2
    scale = signal.step_scale(source)
    case = {"audio": source.copy(), "boundaries": [b], "kept": [(0, b)], "expected_samples": source.shape[1]}
    clean = judge.judge_edit(case, source)
    assert clean["boundaries"][0]["no_click"] and clean["kept_identical"] and clean["exact_length"]
    stepped = source.copy()
    stepped[:, b:] += 0.5  # a DC step at the boundary: a click
    assert signal.boundary_step(stepped, b) > scale["p999"]
    bad = judge.judge_edit({**case, "audio": stepped}, source)
    assert not bad["boundaries"][0]["no_click"] and bad["boundaries"][0]["over_p999"] > 1
    onset = int(np.argmax(signal.steps(source))) + 1  # the source's own largest step (a drum attack)
    assert signal.boundary_step(source, onset) > scale["p999"]
    on_hit = judge.judge_edit({**case, "boundaries": [onset], "kept": [(0, onset)]}, source)
    assert on_hit["boundaries"][0]["no_click"]  # reproducing the source's own onset is no click
    changed = source.copy()
    changed[0, 10] += 1e-6  # one kept sample off by a hair: not bit-identical
    assert not judge.judge_edit({**case, "audio": changed}, source)["kept_identical"]


def test_prompts_carry_their_truth_and_exact_lengths():
    drums = data.prompts("drums", 3)
    for p in drums:
        grid = Grid(p.truth["bpm"], p.truth["meter"], p.truth["bars"])
        assert p.samples == grid.samples and round(p.seconds * SR) == p.samples
        assert f"{p.truth['bpm']:g}" in p.text
    assert [p.seed for p in drums] == [0, 1, 2]
    sfx = data.prompts("sfx", 4)
    assert sorted(p.truth["tonal"] for p in sfx) == [False, False, True, True]
    # disjoint from the training stream: none of these clips is a training clip (seed 0)
    from sa3_engine.training.synth.dataset import clip_at

    training = {clip_at(0, i).caption for i in range(16)}
    assert not training & {data.clip(data.PROMPTS, "drums", i).caption for i in range(3)}


def test_spectrogram_pictures_are_written(tmp_path):
    pytest.importorskip("matplotlib")  # the bench extra, not dev
    from bench.measures import report

    tone = _tone(0.5, 440.0)
    path = report.spectrograms(tmp_path / "x.png", "title", [("a", tone), ("b", tone[:, : SR // 4])], [[0.1], [0.2]])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_measurement_runs_end_to_end_on_the_tiny_random_model(tmp_path):
    """Smoke only (random weights: the numbers mean nothing): every stage runs and the files are written."""
    import argparse
    import json

    from bench.measures.measure import measure

    args = argparse.Namespace(model="tiny-random", base=None, seeds=1, out=str(tmp_path), threads=1, batch=4,
                              validation_clips=4, classifier_clips=2, pictures=False,
                              codec_reference=True)
    results = measure(args, log=lambda line: None)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["models"]["post-trained"]["criteria"]["lengths"]["value"] == 1.0  # every length exact
    assert saved["models"]["post-trained"]["criteria"]["inpaint_kept"]["value"] == 1.0  # splice keeps the source
    assert "#### Criteria" in (tmp_path / "results.md").read_text()
    assert results["settings"]["seeds"] == 1
