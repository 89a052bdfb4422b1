import math
import tempfile
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import mido
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.timeline import (
    BarBeatTick,
    Meter,
    TempoMap,
    latent_frames_to_samples,
    samples_to_latent_frames,
    samples_to_seconds,
    seconds_to_samples,
)

SAMPLE_RATES = st.sampled_from([44100, 48000, 96000])
property_test = settings(max_examples=80, deadline=None)


# -- independent oracles: plain loops over the change lists, no lookup tables ----------------------


def oracle_quarters(meters, bar):
    """Quarter notes before 0-based `bar`, walking (bar, numerator, denominator) changes in order."""
    quarters = Fraction(0)
    for i, (start, numerator, denominator) in enumerate(meters):
        end = meters[i + 1][0] if i + 1 < len(meters) else math.inf
        span = min(bar, end) - start
        if span <= 0:
            break
        quarters += span * Fraction(4 * numerator, denominator)
    return quarters


def oracle_seconds(tempos, quarters):
    """Seconds before `quarters`, walking (quarter, bpm) changes in order."""
    seconds = Fraction(0)
    for i, (start, bpm) in enumerate(tempos):
        end = tempos[i + 1][0] if i + 1 < len(tempos) else math.inf
        span = min(quarters, end) - start
        if span <= 0:
            break
        seconds += span * 60 / Fraction(bpm)
    return seconds


@st.composite
def tempo_lists(draw):
    bpms = st.floats(20, 400) | st.fractions(20, 400, max_denominator=1000)
    tempos = [(Fraction(0), draw(bpms))]
    for _ in range(draw(st.integers(0, 4))):
        step = draw(st.fractions(Fraction(1, 32), 12, max_denominator=32))  # often mid-bar
        tempos.append((tempos[-1][0] + step, draw(bpms)))
    return tempos


@st.composite
def meter_lists(draw):
    numerators = st.integers(1, 15)
    denominators = st.sampled_from([1, 2, 4, 8, 16])
    meters = [(0, draw(numerators), draw(denominators))]
    for _ in range(draw(st.integers(0, 3))):
        meters.append((meters[-1][0] + draw(st.integers(1, 5)), draw(numerators), draw(denominators)))
    return meters


@st.composite
def maps(draw):
    tempos, meters = draw(tempo_lists()), draw(meter_lists())
    return TempoMap.from_lists(tempos, meters), tempos, meters


bars = st.fractions(0, 40, max_denominator=64) | st.floats(0, 40)


# -- known values ------------------------------------------------------------------------------------


def test_bar_exact_lengths_match_hand_computed_values():
    # Per-bar rounding would give 661 504 and 9 070 900 here (research notes, section 4.1).
    assert TempoMap.constant(128).bar_range_to_samples(0, 8, 44100) == (0, 661500)
    assert TempoMap.constant(127).bar_range_to_samples(0, 100, 48000) == (0, 9070866)


@pytest.mark.parametrize(
    ("meter", "bar_seconds"),
    [("4/4", 2), ("3/4", 1.5), ("6/8", 1.5), ("7/8", 1.75), ("5/4", 2.5), ("2/2", 2)],
)
def test_bar_length_follows_the_meter_at_quarter_note_bpm(meter, bar_seconds):
    tempo_map = TempoMap.constant(120, Meter.parse(meter))
    assert tempo_map.bar_to_seconds(3) == 3 * Fraction(bar_seconds)
    assert tempo_map.meter_at(2.5) == Meter.parse(meter)


def test_tempo_change_mid_bar():
    tempo_map = TempoMap.from_lists([(0, 120), (2, 60)])  # halfway through bar 1, 120 -> 60 bpm
    assert tempo_map.bar_to_seconds(0.5) == 1
    assert tempo_map.bar_to_seconds(1) == 1 + 2
    assert tempo_map.bar_to_seconds(2) == 3 + 4
    assert tempo_map.tempo_at(0.25) == 120.0
    assert tempo_map.tempo_at(0.5) == 60.0
    assert tempo_map.seconds_to_bar(2) == Fraction(3, 4)


def test_meter_changes_count_bars_in_each_meter():
    tempo_map = TempoMap.from_lists([(0, 120)], [(0, 4, 4), (2, 6, 8), (4, 7, 8), (5, 5, 4)])
    assert [tempo_map.bar_to_quarters(b) for b in range(7)] == [
        0,
        4,
        8,
        11,
        14,
        Fraction(35, 2),
        Fraction(45, 2),
    ]
    assert [str(tempo_map.meter_at(b)) for b in (1.9, 2, 4.5, 6)] == ["4/4", "6/8", "7/8", "5/4"]
    assert tempo_map.bar_to_bbt(2 + Fraction(5, 6)) == BarBeatTick(3, 6, 0)  # sixth eighth of a 6/8 bar


def test_display_positions_are_one_based_and_ticks_subdivide_the_meter_beat():
    tempo_map = TempoMap.from_lists([(0, 90)], [(0, 4, 4), (1, 6, 8)])
    assert tempo_map.bbt_to_bar(BarBeatTick(1, 1, 0)) == 0
    assert tempo_map.bbt_to_bar(BarBeatTick(2, 4, 480), ticks_per_beat=960) == 1 + Fraction(7, 12)
    assert str(tempo_map.bar_to_bbt(1 + Fraction(7, 12))) == "2:4:480"
    # rounding to the nearest tick carries into the next bar
    assert tempo_map.bar_to_bbt(Fraction(2) - Fraction(1, 10**6)) == BarBeatTick(3, 1, 0)


# -- properties ----------------------------------------------------------------------------------


@property_test
@given(maps(), bars, SAMPLE_RATES)
def test_samples_are_the_exact_time_rounded_once(case, bar, sample_rate):
    tempo_map, tempos, meters = case
    exact = oracle_seconds(tempos, oracle_quarters(meters, Fraction(bar)))
    assert tempo_map.bar_to_seconds(bar) == exact
    sample = tempo_map.bar_to_sample(bar, sample_rate)
    assert sample == math.floor(exact * sample_rate + Fraction(1, 2))
    assert abs(sample - exact * sample_rate) <= Fraction(1, 2)


@property_test
@given(maps(), bars, SAMPLE_RATES)
def test_round_trips_are_exact(case, bar, sample_rate):
    tempo_map = case[0]
    bar = Fraction(bar)
    assert tempo_map.seconds_to_bar(tempo_map.bar_to_seconds(bar)) == bar
    assert tempo_map.quarters_to_bar(tempo_map.bar_to_quarters(bar)) == bar
    sample = tempo_map.bar_to_sample(bar, sample_rate)
    assert tempo_map.bar_to_sample(tempo_map.sample_to_bar(sample, sample_rate), sample_rate) == sample
    assert seconds_to_samples(samples_to_seconds(sample, sample_rate), sample_rate) == sample


@property_test
@given(maps(), st.integers(0, 30), st.integers(1, 12), SAMPLE_RATES)
def test_consecutive_bar_ranges_tile_exactly(case, start_bar, count, sample_rate):
    tempo_map = case[0]
    ranges = [
        tempo_map.bar_range_to_samples(b, b + 1, sample_rate) for b in range(start_bar, start_bar + count)
    ]
    for (_, end), (next_start, _) in pairwise(ranges):
        assert end == next_start
    whole = tempo_map.bar_range_to_samples(start_bar, start_bar + count, sample_rate)
    assert (ranges[0][0], ranges[-1][1]) == whole
    assert sum(end - start for start, end in ranges) == whole[1] - whole[0]


@property_test
@given(maps(), bars, bars, SAMPLE_RATES)
def test_conversions_are_monotonic(case, a, b, sample_rate):
    tempo_map = case[0]
    low, high = sorted((Fraction(a), Fraction(b)))
    if low < high:
        assert tempo_map.bar_to_seconds(low) < tempo_map.bar_to_seconds(high)
        assert tempo_map.seconds_to_bar(low) < tempo_map.seconds_to_bar(high)
    assert tempo_map.bar_to_sample(low, sample_rate) <= tempo_map.bar_to_sample(high, sample_rate)


@property_test
@given(maps(), st.integers(1, 30), st.data())
def test_display_positions_round_trip(case, bar, data):
    tempo_map = case[0]
    meter = tempo_map.meter_at(bar - 1)
    position = BarBeatTick(bar, data.draw(st.integers(1, meter.numerator)), data.draw(st.integers(0, 959)))
    assert tempo_map.bar_to_bbt(tempo_map.bbt_to_bar(position)) == position


@property_test
@given(maps(), bars)
def test_display_position_is_the_nearest_tick(case, bar):
    tempo_map = case[0]
    shown = tempo_map.bbt_to_bar(tempo_map.bar_to_bbt(bar, ticks_per_beat=96), ticks_per_beat=96)
    half_tick_in_bars = Fraction(1, 2 * 96 * tempo_map.meter_at(bar).numerator)
    assert abs(shown - Fraction(bar)) <= half_tick_in_bars


@property_test
@given(st.integers(0, 10_000), st.sampled_from([22050, 44100, 48000, 88200, 96000]))
def test_latent_frames_cover_their_samples(frames, sample_rate):
    samples = latent_frames_to_samples(frames, sample_rate)
    assert samples_to_latent_frames(samples, sample_rate) in (frames, frames + 1)
    assert latent_frames_to_samples(samples_to_latent_frames(samples, sample_rate), sample_rate) >= samples
    if sample_rate == 44100:
        assert samples == frames * 4096
        assert samples_to_latent_frames(samples, sample_rate) == frames


def test_latent_frames_at_model_rate_and_custom_ratio():
    assert [samples_to_latent_frames(n, 44100) for n in (0, 1, 4096, 4097)] == [0, 1, 1, 2]
    assert latent_frames_to_samples(1, 48000) == 4458  # 4096 * 48000 / 44100 = 4458.2
    assert samples_to_latent_frames(4096, 96000, model_rate=48000, frame_samples=2048) == 1
    assert latent_frames_to_samples(3, 96000, model_rate=48000, frame_samples=2048) == 12288


# -- MIDI ---------------------------------------------------------------------------------------


@st.composite
def midi_maps(draw):
    ticks_per_beat = draw(st.sampled_from([96, 480, 960]))
    tempos = [(0, draw(st.integers(200_000, 2_000_000)))]  # microseconds per quarter note
    for _ in range(draw(st.integers(0, 4))):
        tempos.append(
            (tempos[-1][0] + draw(st.integers(1, 8 * ticks_per_beat)), draw(st.integers(200_000, 2_000_000)))
        )
    return ticks_per_beat, tempos, draw(meter_lists())


def write_midi(path, ticks_per_beat, tempos, meters):
    """A type 1 file: tempo events in the first track, meters (and a note) in the second."""
    tempo_track = mido.MidiTrack()
    previous = 0
    for tick, tempo in tempos:
        tempo_track.append(mido.MetaMessage("set_tempo", tempo=tempo, time=tick - previous))
        previous = tick
    meter_track = mido.MidiTrack()
    previous = 0
    for bar, numerator, denominator in meters:
        tick = int(oracle_quarters(meters, bar) * ticks_per_beat)
        meter_track.append(
            mido.MetaMessage(
                "time_signature", numerator=numerator, denominator=denominator, time=tick - previous
            )
        )
        previous = tick
    meter_track.append(mido.Message("note_on", note=60, time=ticks_per_beat))
    meter_track.append(mido.Message("note_off", note=60, time=ticks_per_beat))
    mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat, tracks=[tempo_track, meter_track]).save(path)


@settings(max_examples=30, deadline=None)
@given(midi_maps())
def test_midi_round_trip(case):
    ticks_per_beat, tempos, meters = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "map.mid"
        write_midi(path, ticks_per_beat, tempos, meters)
        loaded = TempoMap.from_midi(path)
        midi = mido.MidiFile(path)
    expected = TempoMap.from_lists(
        [(Fraction(tick, ticks_per_beat), Fraction(60_000_000, tempo)) for tick, tempo in tempos], meters
    )
    assert loaded == expected
    # mido's own playback clock (floats) agrees with the map at every event
    clock = 0.0
    for message, absolute_tick in zip(midi, _absolute_ticks(midi), strict=True):
        clock += message.time
        assert math.isclose(
            clock, loaded.quarters_to_seconds(Fraction(absolute_tick, ticks_per_beat)), abs_tol=1e-9
        )


def _absolute_ticks(midi):
    tick = 0
    for message in mido.merge_tracks(midi.tracks):
        tick += message.time
        yield tick


def test_midi_without_meta_events_uses_midi_defaults(tmp_path):
    track = mido.MidiTrack(
        [mido.Message("note_on", note=60, time=0), mido.Message("note_off", note=60, time=480)]
    )
    mido.MidiFile(ticks_per_beat=480, tracks=[track]).save(tmp_path / "plain.mid")
    loaded = TempoMap.from_midi(tmp_path / "plain.mid")
    assert loaded == TempoMap.constant(120)


def test_midi_meter_change_mid_bar_cuts_the_bar_short(tmp_path):
    track = mido.MidiTrack(
        [
            mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0),
            mido.MetaMessage("time_signature", numerator=3, denominator=4, time=6 * 480),  # bar 2, beat 3
        ]
    )
    mido.MidiFile(ticks_per_beat=480, tracks=[track]).save(tmp_path / "cut.mid")
    tempo_map = TempoMap.from_midi(tmp_path / "cut.mid")
    assert [tempo_map.bar_to_quarters(b) for b in (0, 1, 2, 3)] == [0, 4, 6, 9]
    assert tempo_map.seconds_to_bar(2.5) == Fraction(5, 4)  # quarter 5, inside the short bar
    with pytest.raises(ValueError, match="cut short"):
        tempo_map.bar_to_quarters(1.5)
    with pytest.raises(ValueError, match="cut short"):
        tempo_map.bbt_to_bar(BarBeatTick(2, 3, 0))
    assert tempo_map.bar_to_bbt(Fraction(3, 2) - Fraction(1, 10**6)) == BarBeatTick(3, 1, 0)


def test_type_2_midi_is_refused(tmp_path):
    mido.MidiFile(type=2, tracks=[mido.MidiTrack()]).save(tmp_path / "t2.mid")
    with pytest.raises(ValueError, match="type 2"):
        TempoMap.from_midi(tmp_path / "t2.mid")


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bpm", [0, -120, float("nan"), float("inf")])
def test_bad_tempo_is_refused(bpm):
    with pytest.raises(ValueError, match="bpm"):
        TempoMap.constant(bpm)


@pytest.mark.parametrize(
    ("numerator", "denominator", "field"),
    [
        (0, 4, "numerator"),
        (4, 0, "denominator"),
        (4, 3, "power of two"),
        (-3, 8, "numerator"),
        (3.5, 4, "numerator"),
    ],
)
def test_bad_meter_is_refused(numerator, denominator, field):
    with pytest.raises(ValueError, match=field):
        Meter(numerator, denominator)


@pytest.mark.parametrize("text", ["4-4", "4/", "x/4", "4/4/4"])
def test_unparseable_meter_is_refused(text):
    with pytest.raises(ValueError, match="meter must look like"):
        Meter.parse(text)


def test_negative_positions_are_refused():
    tempo_map = TempoMap.constant(120)
    for call in (
        lambda: tempo_map.bar_to_seconds(-1),
        lambda: tempo_map.seconds_to_bar(-0.5),
        lambda: tempo_map.sample_to_bar(-1, 44100),
        lambda: seconds_to_samples(-1e-9, 48000),
        lambda: samples_to_seconds(-1, 48000),
        lambda: samples_to_latent_frames(-4096, 44100),
    ):
        with pytest.raises(ValueError, match=">= 0|non-negative"):
            call()


@pytest.mark.parametrize(
    ("tempos", "meters", "message"),
    [
        ([(1, 120)], [(0, 4, 4)], "first tempo change must be at position 0"),
        ([(0, 120), (4, 100), (4, 90)], [(0, 4, 4)], "strictly increasing"),
        ([], [(0, 4, 4)], "first tempo change"),
        ([(0, 120)], [(1, 4, 4)], "first meter change must be at bar 0"),
        ([(0, 120)], [(0, 4, 4), (2, 3, 4), (2, 6, 8)], "increasing bar order"),
        ([(0, 120)], [(0, 4, 6)], "power of two"),
    ],
)
def test_bad_lists_are_refused(tempos, meters, message):
    with pytest.raises(ValueError, match=message):
        TempoMap.from_lists(tempos, meters)


def test_bad_ranges_rates_and_display_positions_are_refused():
    tempo_map = TempoMap.constant(100, Meter(6, 8))
    with pytest.raises(ValueError, match="end_bar"):
        tempo_map.bar_range_to_samples(2, 1, 44100)
    with pytest.raises(ValueError, match="sample_rate"):
        tempo_map.bar_to_sample(1, 0)
    with pytest.raises(ValueError, match="beat must be 1..6"):
        tempo_map.bbt_to_bar(BarBeatTick(1, 7, 0))
    with pytest.raises(ValueError, match="bar counts from 1"):
        tempo_map.bbt_to_bar(BarBeatTick(0, 1, 0))
    with pytest.raises(ValueError, match="tick must be 0..959"):
        tempo_map.bbt_to_bar(BarBeatTick(1, 1, 960))
    with pytest.raises(TypeError, match="bar must be a number"):
        tempo_map.bar_to_seconds("1")
