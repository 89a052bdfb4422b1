"""The plugin shell end to end on the offline host and the tiny model: loops, inpaint, extend, variation.

Checked at 44.1, 48 and 96 kHz and under tempo changes and 3/4, 6/8, 7/8: sample-exact lengths and
placements, source files byte-identical afterwards, loop seams, bit-identity outside an inpaint.
"""

import hashlib
import json
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pedalboard.io import AudioFile

from bridge.results import Generation
from bridge.timeline import Meter, TempoMap
from daw_presets import load_preset
from plugin_shell.backends import EngineBackend, PipelineBackend
from plugin_shell.dsp import seam_discontinuity, smooth_join, wrap_crossfade
from plugin_shell.host import Selection
from plugin_shell.shell import Cancelled, Musical, PluginShell, context_window, latent_region
from plugin_shell.testhost import Arrangement
from sa3_engine.audio import read_audio, resample, write_wav

STEPS = 2
FRAME = 4096  # SA3's model samples per latent frame at 44.1 kHz

# (host rate, tempo map): every host rate, constant and changing tempi, 4/4, 3/4, 6/8 and 7/8
HOSTS = {
    "44k1-4/4-tempo-change": (44100, TempoMap.from_lists([(0, 200), (3, 150)], [(0, 4, 4)])),
    "48k-3/4": (48000, TempoMap.constant(180, Meter(3, 4))),
    "48k-6/8-tempo-change": (48000, TempoMap.from_lists([(0, 170), (4.5, 130)], [(0, 6, 8)])),
    "96k-7/8": (96000, TempoMap.constant(210, Meter(7, 8))),
    "96k-4/4-to-7/8": (96000, TempoMap.from_lists([(0, 240), (4, 190)], [(0, 4, 4), (1, 7, 8)])),
}


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    """The product path: every workflow below goes through a real engine process and the protocol."""
    from bridge.client import EngineClient
    from bridge.spawn import EngineProcess

    with EngineProcess(tmp_path_factory.mktemp("engine")) as process:
        with EngineClient(process.connection_file) as client:
            yield EngineBackend(client, "tiny-random")


def test_pipeline_backend_gives_what_the_engine_gives(tmp_path, backend):
    """The in-process backend (for scripts) produces the same audio as the engine for the same request,
    in every mode."""
    from sa3_engine.generation.pipeline import Pipeline

    local = PipelineBackend(Pipeline.load("tiny-random", device="cpu"))
    made_a = local.generate("pads", seconds=1.5, seed=4, steps=STEPS)
    made_b = backend.generate("pads", seconds=1.5, seed=4, steps=STEPS)
    a, b = made_a.audio, made_b.audio
    assert a.shape == b.shape == (2, round(1.5 * 44100)) and made_a.seed == made_b.seed == 4
    assert np.allclose(a, b, atol=1e-5)
    calls = [
        ("inpaint", dict(start=0.5, end=1.0), a.shape[1]),
        ("extend", dict(seconds=0.5), a.shape[1] + 22050),
        ("variation", dict(init_noise_level=0.6), a.shape[1]),
    ]
    for method, options, length in calls:
        ours = getattr(local, method)(a, prompt="pads", seed=5, steps=STEPS, **options).audio
        made = getattr(backend, method)(a, prompt="pads", seed=5, steps=STEPS, **options)
        theirs = made.audio
        assert ours.shape == theirs.shape == (2, length) and made.metadata["seed"] == 5, method
        assert np.allclose(ours, theirs, atol=1e-5), method


@pytest.fixture(params=sorted(HOSTS))
def host(request, tmp_path):
    rate, tempo_map = HOSTS[request.param]
    arrangement = Arrangement(rate, tempo_map, tmp_path / "clips")
    arrangement.add_track("t")
    return arrangement


class Spy:
    """A backend passing every call to `inner` and recording (method, kwargs, output); `max_seconds` can
    be lowered to exercise the shell's limits."""

    def __init__(self, inner, max_seconds=None):
        self.inner, self.calls = inner, []
        self.model_id, self.sample_rate = inner.model_id, inner.sample_rate
        self.max_seconds = max_seconds or inner.max_seconds

    def __getattr__(self, method):
        def call(*args, **kwargs):
            made = getattr(self.inner, method)(*args, **kwargs)
            self.calls.append((method, args, kwargs, made.audio))
            return made

        return call


class Tonal:
    """A backend of plain sines (periods that divide no loop here), so seams and splices can be judged;
    records every call and reports two progress events per call."""

    model_id, sample_rate, max_seconds = "tonal", 44100, 30.0

    def __init__(self):
        self.calls = []

    @staticmethod
    def tone(n, phase=0.0):
        t = np.arange(n) / 44100
        return (0.4 * np.stack([np.sin(2 * np.pi * 110.3 * t + phase), np.sin(2 * np.pi * 164.9 * t + phase)]))

    def _done(self, method, audio, kwargs):
        for i in (1, 2):
            if kwargs.get("progress"):
                kwargs["progress"]({"stage": "sample", "i": i, "n": 2})
        self.calls.append((method, kwargs, audio))
        return Generation(audio.astype(np.float32), 44100, kwargs.get("seed", -1), {})

    def generate(self, prompt, *, seconds, **kwargs):
        return self._done("generate", self.tone(round(seconds * 44100)), dict(kwargs, prompt=prompt, seconds=seconds))

    def inpaint(self, audio, *, start, end, prompt, **kwargs):
        out = audio.copy()
        a, b = int(start * 44100), int(end * 44100)
        out[:, a:b] = self.tone(b - a, 1.0)
        return self._done("inpaint", out, dict(kwargs, prompt=prompt, start=start, end=end, source=audio))

    def extend(self, audio, *, seconds, prompt, **kwargs):
        out = np.concatenate([audio, self.tone(round(seconds * 44100))], axis=1)
        return self._done("extend", out, dict(kwargs, prompt=prompt, seconds=seconds))

    def variation(self, audio, *, init_noise_level, prompt, **kwargs):
        return self._done("variation", audio * 0.5, dict(kwargs, prompt=prompt, init_noise_level=init_noise_level))


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_clip(host, tmp_path, *, bar=1, seconds=3.0, rate=44100):
    """A smooth stereo source file (at `rate`, not necessarily the host's) placed at `bar`."""
    t = np.arange(round(seconds * rate)) / rate
    audio = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 330 * t + 1)])
    path = write_wav(tmp_path / "source.wav", audio.astype(np.float32), rate, bit_depth="24")
    return host.add_clip("t", path, bar=bar), sha256(path)


# -- pure helpers ------------------------------------------------------------------------------


def test_prompts_come_from_the_template_preset_tags_first(tmp_path):
    host = Arrangement(44100, TempoMap.constant(126.5, Meter(7, 8)), tmp_path)
    host.add_track("t")
    backend = Tonal()
    shell = PluginShell(host, backend)  # default: the music_loop preset
    clip = shell.generate_loop("t", bars=2, start_bar=0, prompt="warm pads", seed=1)
    (_, kwargs, _), = backend.calls
    # the musical facts first, so T5's 256-token cut falls on the producer's words; no key set: no Key tag;
    # 126.5 bpm rounds half up, as every prompt does
    assert kwargs["prompt"] == (
        "TrackType: Music, VocalType: Instrumental, BPM: 127, Time Signature: 7/8, seamless 2 bar loop, warm pads"
    )
    assert kwargs["negative_prompt"] == load_preset("prompt", "music_loop").negative
    sidecar = json.loads(clip.path.with_suffix(".json").read_text())
    assert (sidecar["prompt"], sidecar["template"], sidecar["tempo_bpm"]) == (kwargs["prompt"], "music_loop", 126.5)

    drums = load_preset("prompt", "drum_loop")
    PluginShell(host, backend, template=drums).generate_loop(
        "t", bars=1, start_bar=0, key="C minor", negative_prompt="cowbell"
    )
    assert backend.calls[-1][1]["prompt"] == (
        "TrackType: Instrument, Instruments: drum kit, BPM: 127, Time Signature: 7/8, seamless 1 bar drum loop, "
        "Genre: funk"
    )
    assert backend.calls[-1][1]["negative_prompt"] == "cowbell"
    with pytest.raises(ValueError, match="template: no prompt preset 'jazz'"):
        PluginShell(host, backend, template="jazz")
    with pytest.raises(ValueError, match="daw: no daw preset 'cubase'"):
        PluginShell(host, backend, daw="cubase")


def test_seam_measure_separates_clicks_from_continuous_wraps():
    n = 44100
    whole = np.sin(2 * np.pi * 100 * np.arange(n) / n)[None]  # 100 whole cycles: wraps continuously
    broken = np.sin(2 * np.pi * 100.25 * np.arange(n) / n)[None]  # ends a quarter cycle early: a jump
    assert seam_discontinuity(whole) < 2  # about pi/2 through a zero crossing
    assert seam_discontinuity(broken) > 20
    assert seam_discontinuity(np.zeros((2, 100))) == 0.0
    clicked = np.zeros((1, 1000))
    clicked[0, 500:] = 0.1  # flat on both sides of the wrap, with a step across it
    assert seam_discontinuity(clicked) == np.inf
    noise = np.random.default_rng(0).standard_normal((2, 10000))
    assert seam_discontinuity(noise) < 4  # a wrap inside noise is one more typical step
    with pytest.raises(ValueError, match="loop"):
        seam_discontinuity(np.zeros(100))


def test_wrap_crossfade_makes_the_wrap_continue_the_audio():
    rate, length, crossfade = 44100, 22050, 441
    t = np.arange(length + 2 * crossfade) / rate
    audio = np.stack([np.sin(2 * np.pi * 97.3 * t), np.sin(2 * np.pi * 211.7 * t)]).astype(np.float32)
    assert seam_discontinuity(audio[:, :length]) > 10  # trimming alone clicks
    loop = wrap_crossfade(audio, length, crossfade)
    assert loop.shape == (2, length)
    assert seam_discontinuity(loop) < 2
    assert np.array_equal(loop[:, crossfade:], audio[:, crossfade:length])  # only the head is touched
    with pytest.raises(ValueError, match="audio"):
        wrap_crossfade(audio[:, : length + 10], length, crossfade)


def test_smooth_join_removes_the_step_between_back_to_back_clips():
    t = np.arange(4000) / 44100
    before = np.sin(2 * np.pi * 200 * t)[None].astype(np.float32)
    after = (np.sin(2 * np.pi * 200 * (t + t[-1] + 1 / 44100) + 2.0) * 0.8)[None].astype(np.float32)
    assert seam_discontinuity(np.concatenate([after, before], axis=1)) > 10
    joined = smooth_join(before, after, 441)
    assert seam_discontinuity(np.concatenate([joined, before], axis=1)) < 2
    assert np.array_equal(joined[:, 441:], after[:, 441:]) and joined.dtype == np.float32


@given(
    total=st.integers(10, 5000), data=st.data(), max_length=st.integers(1, 3000), context=st.integers(0, 3000)
)
def test_context_window_holds_the_selection_centred_within_limits(total, data, max_length, context):
    start = data.draw(st.integers(0, total - 1))
    end = data.draw(st.integers(start + 1, total))
    if end - start > max_length:
        with pytest.raises(ValueError, match="selection"):
            context_window(start, end, total, max_length, context)
        return
    w0, w1 = context_window(start, end, total, max_length, context)
    assert 0 <= w0 <= start < end <= w1 <= total
    assert w1 - w0 == min(total, max_length, end - start + 2 * context)
    if w0 > 0 and w1 < total:  # not pushed by a clip edge: centred to within a sample
        assert abs((start - w0) - (w1 - end)) <= 1


# -- workflows on the tiny model ---------------------------------------------------------------


def test_loop_is_exactly_n_bars_seamless_and_placed_on_the_bar(host, backend):
    events = []
    host.on_progress = events.append
    spy = Spy(backend)
    shell = PluginShell(host, spy, steps=STEPS, warp=False)  # the audio as generated (tests/test_warp.py warps)
    clip = shell.generate_loop("t", bars=2, start_bar=1, prompt="drums", key="C major", seed=3)
    start, end = host.tempo_map.bar_range_to_samples(1, 3, host.sample_rate)
    audio, rate = read_audio(clip.path)
    assert (rate, clip.start, audio.shape) == (host.sample_rate, start, (2, end - start))
    assert host.track("t").clips == [clip]

    # the loop is the generation's first bars, its head crossfaded with what the model played next
    (method, _, kwargs, generated), = spy.calls
    generated = resample(generated, backend.sample_rate, host.sample_rate)
    length, crossfade = end - start, round(0.03 * host.sample_rate)
    assert method == "generate" and generated.shape[1] >= length + crossfade
    assert round(kwargs["seconds"] * host.sample_rate) == length + round(length / 2)  # one (mean) bar of overflow
    assert np.array_equal(audio[:, crossfade:], generated[:, crossfade:length])
    np.testing.assert_allclose(audio[:, 0], generated[:, length], atol=1e-3)
    assert events and all(set(e) == {"stage", "i", "n"} for e in events)

    sidecar = json.loads(clip.path.with_suffix(".json").read_text())
    meter = str(host.tempo_map.meter_at(1))
    assert sidecar["op"] == "loop" and sidecar["seed"] == 3 and sidecar["model"] == backend.model_id
    assert (sidecar["start_bar"], sidecar["end_bar"], sidecar["meter"]) == (2, 4, meter)  # bars from 1
    assert sidecar["sample_rate"] == host.sample_rate and sidecar["length"] == end - start
    bpm = math.floor(sidecar["tempo_bpm"] + 0.5)
    assert f"BPM: {bpm}, Time Signature: {meter}, Key: C major, seamless 2 bar loop, drums" in sidecar["prompt"]


@pytest.mark.parametrize("name", sorted(HOSTS))
def test_loop_wrap_is_seamless_where_a_plain_cut_clicks(name, tmp_path):
    rate, tempo_map = HOSTS[name]
    host = Arrangement(rate, tempo_map, tmp_path)
    host.add_track("t")
    backend = Tonal()
    clip = PluginShell(host, backend).generate_loop("t", bars=2, start_bar=1)
    loop = read_audio(clip.path)[0]
    (_, _, generated), = backend.calls
    plain_cut = resample(generated.astype(np.float32), 44100, rate)[:, : loop.shape[1]]
    assert seam_discontinuity(plain_cut) > 10
    assert seam_discontinuity(loop) < 2


def test_loop_tempo_is_the_mean_over_its_bars():
    """A bar at 120 then a bar at 60 quarter-note bpm in 4/4: 8 quarters in 6 s = 80 bpm."""
    host = Arrangement(48000, TempoMap.from_lists([(0, 120), (8, 60)], [(0, 4, 4)]), "/nonexistent")
    musical = Musical.of(host, *host.tempo_map.bar_range_to_samples(1, 3, 48000))
    assert musical.bpm == pytest.approx(80.0) and musical.start_bar == 1 and musical.end_bar == 3


def test_loop_starts_at_the_selection_by_default(tmp_path, backend):
    host = Arrangement(48000, TempoMap.constant(240, Meter(6, 8)), tmp_path)
    host.add_track("t")
    host.select_bars(2, 2.5)
    clip = PluginShell(host, backend, steps=STEPS).generate_loop("t", bars=1, seed=1)
    assert clip.start == host.bar_to_sample(2)
    assert read_audio(clip.path)[0].shape[1] == host.bar_to_sample(3) - host.bar_to_sample(2)


def test_inpaint_changes_only_the_selection(host, backend, tmp_path):
    source, digest = source_clip(host, tmp_path)
    before = host.read_clip(source)
    selection = host.select_bars(Fraction(3, 2), Fraction(5, 2))
    take = PluginShell(host, backend, steps=STEPS).inpaint("t", source, prompt="fill", seed=5)

    after = host.read_clip(take)
    a, b = selection.start - source.start, selection.end - source.start
    assert take.start == source.start and after.shape == before.shape
    assert np.array_equal(after[:, :a], before[:, :a]) and np.array_equal(after[:, b:], before[:, b:])
    assert not np.allclose(after[:, a:b], before[:, a:b], atol=1e-3)
    assert sha256(source.path) == digest  # the source file is untouched
    assert source.muted and not take.muted and host.track("t").clips == [source, take]
    sidecar = json.loads(take.path.with_suffix(".json").read_text())
    assert sidecar["source"] == {"path": str(source.path), "sha256": digest}
    assert (sidecar["start_bar"], sidecar["end_bar"], sidecar["bars"]) == (2.5, 3.5, 1.0)  # exact, not read back
    assert take.path.name.startswith("t_inpaint_bar2.5-3.5_seed5")


def test_inpaint_context_is_limited_to_the_model_and_centred(tmp_path, backend):
    """A long clip: the backend hears at most `context_seconds` each side, and never more than its max."""
    host = Arrangement(44100, TempoMap.constant(120), tmp_path)
    host.add_track("t")
    source, _ = source_clip(host, tmp_path, seconds=8.0)
    spy = Spy(backend, max_seconds=3.0)
    shell = PluginShell(host, spy, steps=STEPS, context_seconds=1.0)
    shell.inpaint("t", source, selection=host.select(host.bar_to_sample(1) + 44100, host.bar_to_sample(1) + 66150))
    (_, (audio,), kwargs, _), = spy.calls
    assert audio.shape[1] == 22050 + 2 * 44100
    # [1.0, 1.5) s widened to whole latent frames: frames 10 (40960) to 16 (up to 69632)
    assert (kwargs["start"], kwargs["end"]) == (10 * FRAME / 44100, 17 * FRAME / 44100)
    spy.calls.clear()
    PluginShell(host, spy, steps=STEPS, context_seconds=5.0).inpaint(
        "t", source, selection=Selection(source.start + 3 * 44100, source.start + 4 * 44100)
    )
    (_, (audio,), kwargs, _), = spy.calls
    assert 3 * 44100 - FRAME < audio.shape[1] <= 3 * 44100  # as long as fits (exactly: the test below)
    # centred to a sample: [1.0, 2.0) s, widened to frames
    assert (kwargs["start"], kwargs["end"]) == (10 * FRAME / 44100, 22 * FRAME / 44100)


@pytest.mark.parametrize("rate", [22050, 44100, 48000, 96000])
def test_the_longest_clip_sent_is_the_longest_that_fits_the_model(tmp_path, rate):
    """A clip whose audio at the model rate (resampled to round(n * 44100 / rate) samples) fits in
    max_seconds is sent; one host sample more is refused before anything is generated."""
    fits = [n for n in range(3 * rate - 4, 3 * rate + 4) if round(n * 44100 / rate) <= 3 * 44100]
    longest = max(fits)
    host = Arrangement(rate, TempoMap.constant(120), tmp_path / "clips")
    host.add_track("t")
    for n in (longest, longest + 1):
        write_wav(tmp_path / f"{n}.wav", np.full((2, n), 0.1, np.float32), rate, "float")
    spy = Spy(Tonal(), max_seconds=3.0)
    shell = PluginShell(host, spy)
    shell.variation("t", host.add_clip("t", tmp_path / f"{longest}.wav", start=0))
    (_, (audio,), _, _), = spy.calls
    assert audio.shape[1] <= 3 * 44100
    with pytest.raises(ValueError, match="longer than the model's maximum"):
        shell.variation("t", host.add_clip("t", tmp_path / f"{longest + 1}.wav", start=0))


@given(
    rate=st.sampled_from([22050, 44100, 48000, 96000]), start=st.integers(0, 400_000), length=st.integers(1, 50_000),
)
def test_latent_region_regenerates_every_frame_the_selection_touches(rate, start, length):
    """Under the pipeline's official rule (frame i is regenerated iff int(s * 44100) <= i * 4096 <
    int(e * 44100)), the frames regenerated cover the whole selection, and at most a frame more each side."""
    end = start + length
    model_samples = math.ceil(end * 44100 / rate) + 3 * FRAME
    s, e = latent_region(start, end, rate, 44100, model_samples)
    a, b = int(s * 44100), int(e * 44100)
    frames = [i for i in range(model_samples // FRAME + 1) if a <= i * FRAME < b]
    first, last = start * 44100 / rate, end * 44100 / rate  # the selection at the model rate
    half = 0.5 * 44100 / rate  # host samples are rounded: half a host sample of slack
    assert frames == list(range(frames[0], frames[-1] + 1))
    assert frames[0] * FRAME <= first + half and (frames[-1] + 1) * FRAME >= last
    assert first - frames[0] * FRAME < FRAME and (frames[-1] + 1) * FRAME - last < FRAME + half
    assert latent_region(start, end, rate, 44100, FRAME)[1] <= FRAME / 44100  # cut at the audio's end


def test_inpaint_of_a_selection_shorter_than_a_frame_regenerates_it(tmp_path):
    """[1.05, 1.09) s is 40 ms, under a latent frame (93 ms): as is, the official mask would keep every
    frame and change nothing. The backend gets whole frames; the take still changes only the selection."""
    host = Arrangement(44100, TempoMap.constant(120), tmp_path / "clips")
    host.add_track("t")
    source, _ = source_clip(host, tmp_path, bar=0, seconds=3.0)
    backend = Tonal()
    selection = Selection(round(1.05 * 44100), round(1.09 * 44100))
    take = PluginShell(host, backend, context_seconds=0.5).inpaint("t", source, selection=selection)
    (_, kwargs, _), = backend.calls
    w0 = selection.start - 22050  # half a second of context before the selection
    a, b = int(kwargs["start"] * 44100), int(kwargs["end"] * 44100)
    frames = [i for i in range(100) if a <= i * FRAME < b]
    assert frames and frames[0] * FRAME <= selection.start - w0 and (frames[-1] + 1) * FRAME >= selection.end - w0
    before, after = host.read_clip(source), host.read_clip(take)
    assert np.array_equal(after[:, : selection.start], before[:, : selection.start])
    assert np.array_equal(after[:, selection.end :], before[:, selection.end :])
    assert not np.allclose(after[:, selection.start : selection.end], before[:, selection.start : selection.end])


def test_extend_fills_to_the_song_end_contiguously(host, backend, tmp_path):
    source, digest = source_clip(host, tmp_path, bar=0, seconds=1.5)
    host.song_end = host.bar_to_sample(4)
    clip_end = source.start + host.read_clip(source).shape[1]
    extension = PluginShell(host, backend, steps=STEPS, context_seconds=1.0).extend("t", source, seed=9)

    audio, rate = read_audio(extension.path)
    assert rate == host.sample_rate and extension.start == clip_end
    assert audio.shape == (2, host.song_end - clip_end)
    assert host.mix().shape == (2, host.song_end)
    assert sha256(source.path) == digest and not source.muted
    assert host.track("t").clips == [source, extension]
    before = host.read_clip(source)
    np.testing.assert_allclose(audio[:, 0], 2 * before[:, -1] - before[:, -2], atol=1e-6)  # leaves off smoothly


def test_extend_longer_than_the_model_chains_windows(tmp_path, backend):
    host = Arrangement(48000, TempoMap.constant(120), tmp_path)
    host.add_track("t")
    source, _ = source_clip(host, tmp_path, bar=0, seconds=1.0)
    host.song_end = round((backend.max_seconds + 2.0) * 48000)
    extension = PluginShell(host, backend, steps=1, context_seconds=0.5).extend("t", source, seed=2)
    assert read_audio(extension.path)[0].shape[1] == host.song_end - host.read_clip(source).shape[1]


def test_variation_is_a_same_length_take(host, backend, tmp_path):
    source, digest = source_clip(host, tmp_path, seconds=1.0, rate=host.sample_rate)
    take = PluginShell(host, backend, steps=STEPS).variation("t", source, init_noise_level=0.5, seed=4)
    before, after = host.read_clip(source), host.read_clip(take)
    assert take.start == source.start and after.shape == before.shape
    assert not np.array_equal(after, before)
    assert sha256(source.path) == digest and source.muted
    assert json.loads(take.path.with_suffix(".json").read_text())["backend"]["init_noise_level"] == 0.5


def test_results_are_new_unique_files(tmp_path, backend):
    host = Arrangement(44100, TempoMap.constant(240), tmp_path / "clips")
    host.add_track("My Track!")
    shell = PluginShell(host, backend, steps=1)
    first = shell.generate_loop("My Track!", bars=1, start_bar=0, seed=1)
    second = shell.generate_loop("My Track!", bars=1, start_bar=0, seed=1)
    assert first.path != second.path and first.path.parent == second.path.parent == tmp_path / "clips"
    assert first.path.name == "My-Track_loop_bar1-2_seed1.wav" and second.path.name == "My-Track_loop_bar1-2_seed1-1.wav"
    assert [p.name for p in (tmp_path / "clips").iterdir() if p.name.startswith(".")] == []  # no temp files


def test_cancel_from_the_host_stops_every_workflow_before_anything_is_written(tmp_path):
    """The shell's side of cancelling: a host that asks to stop mid-request gets `Cancelled` from any
    workflow, and no file or clip appears (the engine's side is `test_cancel_through_the_engine`)."""
    host = Arrangement(44100, TempoMap.constant(120), tmp_path / "clips")
    host.add_track("t")
    source, _ = source_clip(host, tmp_path, bar=0, seconds=1.0)
    host.song_end = host.bar_to_sample(2)
    host.on_progress = lambda event: host.cancel()
    shell = PluginShell(host, Tonal())
    workflows = {
        "loop": lambda: shell.generate_loop("t", bars=1, start_bar=0),
        "inpaint": lambda: shell.inpaint("t", source, selection=Selection(1000, 5000)),
        "extend": lambda: shell.extend("t", source),
        "variation": lambda: shell.variation("t", source),
    }
    for name, workflow in workflows.items():
        host.cancel_requested = False
        with pytest.raises(Cancelled):
            workflow()
        assert host.track("t").clips == [source] and not source.muted, name
    assert not (tmp_path / "clips").exists()


def test_the_daw_preset_sets_format_names_and_placement(tmp_path):
    host = Arrangement(44100, TempoMap.constant(120), tmp_path / "clips", project="My Song")
    host.add_track("t")
    backend = Tonal()
    reaper = PluginShell(host, backend, daw="reaper")  # 24-bit PCM, takes in a take lane
    loop = reaper.generate_loop("t", bars=1, start_bar=0, seed=5)
    take = reaper.variation("t", loop, prompt="brighter", seed=6)
    assert (loop.path.name, take.path.name) == (
        "My-Song_t_loop_bar1-2_take1_seed5.wav", "My-Song_t_variation_bar1-2_take2_seed6.wav"
    )
    with AudioFile(str(loop.path)) as f:
        assert f.file_dtype == "int24"
    assert take.name == "SA3 variation take 2: brighter" and loop.muted  # names show the producer's words
    assert loop.name.startswith("SA3 loop take 1: TrackType: Music") and len(loop.name) == 64  # or the prompt, cut
    assert host.track("t").clips == [loop, take]

    bitwig = PluginShell(host, backend, daw=load_preset("daw", "bitwig_studio"))  # float, a new track below
    new = bitwig.inpaint("t", take, selection=Selection(1000, 9000))
    with AudioFile(str(new.path)) as f:
        assert f.file_dtype == "float32"
    assert list(host.tracks) == ["t", "t SA3"] and host.track("t SA3").clips == [new] and take.muted
    assert json.loads(new.path.with_suffix(".json").read_text())["placement"] == "new_track_below"


def test_bad_requests_name_the_field(tmp_path, backend):
    host = Arrangement(44100, TempoMap.constant(120), tmp_path / "clips")
    host.add_track("t")
    source, _ = source_clip(host, tmp_path, bar=1, seconds=1.0)
    shell = PluginShell(host, backend, steps=1)
    with pytest.raises(ValueError, match="bars"):
        shell.generate_loop("t", bars=0, start_bar=0)
    with pytest.raises(ValueError, match="selection: the host has no selection"):
        shell.generate_loop("t", bars=1)
    with pytest.raises(ValueError, match="selection: .* not inside the clip"):
        shell.inpaint("t", source, selection=Selection(0, 100))
    with pytest.raises(ValueError, match="the song ends at bar .* not after the clip's end"):
        shell.extend("t", source)
    with pytest.raises(ValueError, match="init_noise_level"):
        shell.variation("t", source, init_noise_level=0.0)
    with pytest.raises(ValueError, match="track: no track named 'x'"):
        shell.generate_loop("x", bars=1, start_bar=0)
    with pytest.raises(ValueError, match="clip: .* longer than the model's maximum"):
        PluginShell(host, Spy(backend, max_seconds=0.5)).variation("t", source)
    host.add_track("u")
    with pytest.raises(ValueError, match="clip: source.wav is not on track 'u'"):
        shell.variation("u", source)
    assert not (tmp_path / "clips").exists()  # nothing was generated or written


# -- the product path: the same workflows through a running engine -------------------------------


def test_progress_and_take_bit_identity_through_the_engine(tmp_path, backend):
    host = Arrangement(48000, TempoMap.constant(200, Meter(7, 8)), tmp_path / "clips")
    host.add_track("t")
    events = []
    host.on_progress = events.append
    shell = PluginShell(host, backend, steps=STEPS)
    loop = shell.generate_loop("t", bars=2, start_bar=1, prompt="hand drums", seed=8)
    start, end = host.tempo_map.bar_range_to_samples(1, 3, 48000)
    assert loop.start == start and host.read_clip(loop).shape == (2, end - start)
    assert json.loads(loop.path.with_suffix(".json").read_text())["seed"] == 8
    assert events and all(set(e) == {"stage", "i", "n"} for e in events)

    digest = sha256(loop.path)
    take = shell.inpaint("t", loop, selection=host.select_bars(1.5, 2))
    before, after = host.read_clip(loop), host.read_clip(take)
    a, b = host.selection.start - loop.start, host.selection.end - loop.start
    assert np.array_equal(after[:, :a], before[:, :a]) and np.array_equal(after[:, b:], before[:, b:])
    assert sha256(loop.path) == digest


def test_cancel_through_the_engine(tmp_path, backend):
    """The engine's side of cancelling: the request is cancelled there too, and the engine is free at once."""
    host = Arrangement(44100, TempoMap.constant(120), tmp_path / "clips")
    host.add_track("t")
    host.on_progress = lambda event: host.cancel()
    with pytest.raises(Cancelled):
        PluginShell(host, backend, steps=8).generate_loop("t", bars=2, start_bar=0, seed=1)
    status = backend.client.status()
    assert status["running"] == [] and status["queued"] == []
    # the engine is free again at once: the next request goes through
    host.cancel_requested = False
    host.on_progress = None
    assert PluginShell(host, backend, steps=1).generate_loop("t", bars=1, start_bar=0, seed=2).start == 0
