"""`sa3 render`: song files to tempo maps, tracks, clips and steps, rendered through the tiny model."""

import hashlib
import json
from fractions import Fraction
from pathlib import Path

import mido
import numpy as np
import pytest
from pedalboard import Gain, LadderFilter, Reverb

from bridge.timeline import TempoMap
from plugin_shell import render
from plugin_shell.testhost import Arrangement
from sa3_engine.audio import read_audio, write_wav
from sa3_engine.cli.main import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def write_song(folder: Path, text: str) -> Path:
    path = folder / "song.toml"
    path.write_text(text)
    return path


def test_tempo_map_from_bpm_meter_and_one_based_changes(tmp_path):
    spec = {"bpm": 120, "meter": "4/4", "changes": [{"bar": 3, "meter": "7/8", "bpm": 90}, {"bar": 4.5, "bpm": 60}]}
    tempo_map = render.tempo_map(spec, tmp_path)
    # bar 3 (1-based) starts after 8 quarters; bar 4.5 is one and a half 7/8 bars (5.25 quarters) later
    assert tempo_map == TempoMap.from_lists([(0, 120), (8, 90), (Fraction(53, 4), 60)], [(0, 4, 4), (2, 7, 8)])


def test_tempo_map_from_a_midi_file(tmp_path):
    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack(
        [
            mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(100), time=0),
            mido.MetaMessage("time_signature", numerator=6, denominator=8, time=0),
            mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(75), time=480 * 6),
        ]
    )
    midi.tracks.append(track)
    midi.save(tmp_path / "tempo.mid")
    assert render.tempo_map({"midi": "tempo.mid"}, tmp_path) == TempoMap.from_midi(tmp_path / "tempo.mid")
    with pytest.raises(ValueError, match="tempo: give either midi or"):
        render.tempo_map({"midi": "tempo.mid", "bpm": 120}, tmp_path)


def test_effects_are_a_chain_preset_then_pedalboard_plugins():
    chain = render.effects({"chain": "acid_filter", "effects": [{"plugin": "Reverb", "room_size": 0.3}]}, "x")
    assert [type(p) for p in chain] == [LadderFilter, Gain, Reverb] and chain[2].room_size == pytest.approx(0.3)
    assert chain[0].mode == LadderFilter.Mode.LPF24  # the shipped chain's enum parameter, as a song gives it too
    ladder = render.effects({"effects": [{"plugin": "LadderFilter", "mode": "LPF24"}]}, "x")
    assert ladder[0].mode == LadderFilter.Mode.LPF24
    assert render.effects({}, "x") == []


@pytest.mark.parametrize(
    "table, message",
    [
        ({"effects": [{"plugin": "Nope"}]}, r"song: x.effects\[0\].plugin: unknown pedalboard effect 'Nope'"),
        ({"effects": [{"plugin": "load_plugin"}]}, r"x.effects\[0\].plugin: unknown"),
        ({"effects": [{"plugin": "Mix"}]}, r"x.effects\[0\].plugin: unknown"),  # containers: no
        ({"effects": [{"plugin": "VST3Plugin", "path_to_plugin_file": "/x.vst3"}]}, r"x.effects\[0\].plugin: unknown"),
        ({"effects": [{"plugin": "Reverb", "size": 1}]}, r"x.effects\[0\].size: Reverb has no parameter 'size'"),
        ({"effects": [{"plugin": "LadderFilter", "mode": "LPF99"}]}, r"x.effects\[0\].mode: must be one of"),
        ({"effects": {"plugin": "Gain"}}, "x.effects: expected a list"),
        ({"chain": "shimmer"}, "x.chain: no chain preset 'shimmer'"),
        ({"chain": 3}, "x.chain: expected a string"),
    ],
)
def test_bad_effects_name_the_field(table, message):
    with pytest.raises(ValueError, match=message):
        render.effects(table, "x")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[tempo]\nbpm = 120", "sample_rate: required"),
        ("sample_rate = 48000\nspeed = 2", r"song: unknown field\(s\) speed"),
        ("sample_rate = 48000\n[tempo]\nmeter = '4/4'", "tempo.bpm: required"),
        ("sample_rate = 48000\n[tempo]\nbpm = 120\nmeter = 'four'", "tempo.meter"),
        ("sample_rate = 48000\n[tempo]\nbpm = 120\nchanges = [{bar = 2.5, meter = '3/4'}]",
         r"tempo.changes\[0\].bar: a meter change must start a whole bar"),
        ("sample_rate = 48000\n[tempo]\nbpm = 120\nchanges = [{bar = 0, bpm = 90}]",
         r"tempo.changes\[0\].bar: expected a bar number >= 1"),
        ("sample_rate = 48000\n[model]\nname = 'x'", r"model: unknown field\(s\) name"),
        ("sample_rate = 48000\n[tempo]\nbpm = 120\n[[tracks]]\ngain_db = 1", r"tracks\[0\].name: required"),
        ("sample_rate = 48000\n[tempo]\nbpm = 120\n[[tracks]]\nname = 'a'\nclips = [{path = 'x.wav', bar = 1}]",
         "clip path: no such file"),
        ("sample_rate = 48000\n[tempo]\nbpm = 120\n[[tracks]]\nname = 'a'\n[[steps]]\nop = 'remix'\ntrack = 'a'",
         r"steps\[0\].op: expected one of loop, inpaint, extend, variation"),
        ("sample_rate = 48000\n[tempo]\nbpm = 120\n[[tracks]]\nname = 'a'\n[[steps]]\nop = 'extend'\ntrack = 'a'"
         "\nclip = 'x'", r"steps\[0\].clip: no clip named 'x'"),
        ("sample_rate = 48000\n[tempo]\nbpm = 120\n[[tracks]]\nname = 'a'\n[[steps]]\nop = 'loop'\ntrack = 'a'"
         "\nbars = 1\nrange = [1, 2]", r"steps\[0\]: unknown field\(s\) range"),
        ("sample_rate = 48000\n[tempo]\nbpm = 120\n[[tracks]]\nname = 'a'\n[[steps]]\nop = 'loop'\ntrack = 'b'"
         "\nbars = 1", "track: no track named 'b'"),
        ("sample_rate = 48000\n[tempo]\nbpm = 120\n[[tracks]]\nname = 'a'\n[[steps]]\nop = 'loop'\ntrack = 'a'",
         r"steps\[0\].bars: required"),
        ("sample_rate = 48000\n[tempo]\nbpm = 120\n[[tracks]]\nname = 'a'\n[[steps]]\nop = 'loop'\ntrack = 'a'"
         "\nbars = 1\nname = 'x'\n[[steps]]\nop = 'inpaint'\ntrack = 'a'\nclip = 'x'\nrange = [2, 1.5]",
         r"steps\[1\].range: the end bar must come after the start bar"),
        ("sample_rate = 48000\n[tempo]\nbpm = 120\n[[tracks]]\nname = 'a'\n[[steps]]\nop = 'loop'\ntrack = 'a'"
         "\nbars = 1\nname = 'x'\n[[steps]]\nop = 'loop'\ntrack = 'a'\nbars = 1\nname = 'x'",
         r"steps\[1\].name: the clip name 'x' is already used"),
        ("sample_rate = 48000\n[tempo\n", "not valid TOML"),
    ],
)
def test_bad_songs_name_the_field(tmp_path, text, message):
    path = write_song(tmp_path, text)
    with pytest.raises(ValueError, match=message):
        render.arrange(render.load_song(path), tmp_path, tmp_path / "clips")


def test_the_command_reports_bad_songs_without_a_traceback(tmp_path, capsys):
    song = write_song(tmp_path, "sample_rate = 48000\n[tempo]\nbpm = 120\nmeter = '5/3'")
    assert main(["render", str(song), "-o", str(tmp_path / "mix.wav")]) == 2
    assert "tempo.meter" in capsys.readouterr().err and not (tmp_path / "mix.wav").exists()
    assert main(["render", str(tmp_path / "missing.toml"), "-o", str(tmp_path / "mix.wav")]) == 2
    # a bad last step stops the render before the first step generates anything
    song = write_song(tmp_path, "sample_rate = 48000\n[tempo]\nbpm = 120\n[[tracks]]\nname = 'a'\n"
                      "[[steps]]\nop = 'loop'\ntrack = 'a'\nbars = 1\n[[steps]]\nop = 'extend'\ntrack = 'a'\nclip = 'b'")
    assert main(["render", str(song), "-o", str(tmp_path / "mix.wav")]) == 2
    assert "steps[1].clip: no clip named 'b'" in capsys.readouterr().err
    assert not (tmp_path / "mix_clips").exists()


BASE = "sample_rate = 48000\ntempo = { bpm = 120 }\n"
SONG = BASE + "[[tracks]]\nname = 'a'\n"
LOOP = "[[steps]]\nop = 'loop'\ntrack = 'a'\nbars = 1\n"


@pytest.mark.parametrize(
    "text, field",
    [
        ("sample_rate = '48k'\n", "sample_rate"),
        ("sample_rate = 48000\n[tempo]\nbpm = 'fast'\n", "tempo.bpm"),
        ("sample_rate = 48000\n[tempo]\nbpm = 0\n", "tempo.bpm"),
        ("sample_rate = 48000\n[tempo]\nbpm = 120\nchanges = [{ bar = 2, bpm = [1] }]\n", "tempo.changes[0].bpm"),
        ("sample_rate = 48000\n[tempo]\nbpm = 120\nchanges = 'x'\n", "tempo.changes"),
        ("sample_rate = 48000\n[tempo]\nmidi = 5\n", "tempo.midi"),
        ("sample_rate = 48000\ntempo = 120\n", "tempo"),
        (BASE + "length_bars = 'six'\n", "length_bars"),
        (BASE + "template = 'jazz'\n", "template"),
        (BASE + "daw = 7\n", "daw"),
        (BASE + "[model]\nsteps = 'many'\n", "model.steps"),
        (BASE + "[model]\ncfg_scale = '7'\n", "model.cfg_scale"),
        (BASE + "[model]\ncfg_scale = 1e308\n", "model.cfg_scale"),
        (BASE + "[model]\nid = 3\n", "model.id"),
        (BASE + "master = [1]\n", "master"),
        (BASE + "[master]\neffects = [{ plugin = 'Gain', gain_db = 'loud' }]\n",
         "master.effects[0].gain_db"),
        (BASE + "[master]\neffects = ['Gain']\n", "master.effects[0]"),
        (BASE + "tracks = 'a'\n", "tracks"),
        (BASE + "[[tracks]]\nname = 5\n", "tracks[0].name"),
        (BASE + "[[tracks]]\nname = 'a'\ngain_db = 'loud'\n", "tracks[0].gain_db"),
        (BASE + "[[tracks]]\nname = 'a'\nclips = [{ path = 1, bar = 1 }]\n", "tracks[0].clips[0].path"),
        (BASE + "[[tracks]]\nname = 'a'\nclips = [{ path = 'x.wav' }]\n", "tracks[0].clips[0]"),
        (BASE + "[[tracks]]\nname = 'a'\nclips = [{ path = 'x.wav', sample = -5 }]\n",
         "tracks[0].clips[0].sample"),
        (BASE + "[[tracks]]\nname = 'a'\nclips = [{ path = 'x.wav', bar = 1, fade_in = 'slow' }]\n",
         "tracks[0].clips[0].fade_in"),
        (BASE + "steps = [5]\n", "steps[0].op"),
        (SONG + LOOP + "seed = 'lucky'\n", "steps[0].seed"),
        (SONG + LOOP + "prompt = 5\n", "steps[0].prompt"),
        (SONG + LOOP + "key = ['C']\n", "steps[0].key"),
        (SONG + LOOP + "bar = '2'\n", "steps[0].bar"),
        (SONG + "[[steps]]\nop = 'loop'\ntrack = 'a'\nbars = 1.5\n", "steps[0].bars"),
        (SONG + "[[steps]]\nop = 'loop'\ntrack = 1\nbars = 1\n", "steps[0].track"),
        (SONG + LOOP + "name = 'x'\n[[steps]]\nop = 'variation'\ntrack = 'a'\nclip = 'x'\ninit_noise_level = 'max'\n",
         "steps[1].init_noise_level"),
        (SONG + LOOP + "name = 'x'\n[[steps]]\nop = 'variation'\ntrack = 'a'\nclip = 'x'\ninit_noise_level = 2\n",
         "steps[1].init_noise_level"),
        (SONG + LOOP + "name = 'x'\n[[steps]]\nop = 'inpaint'\ntrack = 'a'\nclip = 'x'\nrange = ['1', 2]\n",
         "steps[1].range"),
        (SONG + LOOP + "name = 'x'\n[[steps]]\nop = 'extend'\ntrack = 'a'\nclip = 1\n", "steps[1].clip"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_one_line_error_naming_its_field(tmp_path, capsys, text, field):
    write_wav(tmp_path / "x.wav", np.zeros((1, 100), np.float32), 48000, "float")
    song = write_song(tmp_path, text)
    assert main(["render", str(song), "-o", str(tmp_path / "mix.wav")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sa3 render: ") and field + ":" in err and err.count("\n") == 1, err
    assert not (tmp_path / "mix.wav").exists()


def test_existing_outputs_are_never_overwritten_without_force(tmp_path, capsys):
    song = write_song(tmp_path, "sample_rate = 48000\nlength_bars = 1\n[tempo]\nbpm = 120\n")
    (tmp_path / "mix.wav").write_bytes(b"mine")
    assert main(["render", str(song), "-o", str(tmp_path / "mix.wav")]) == 0
    assert (tmp_path / "mix.wav").read_bytes() == b"mine" and read_audio(tmp_path / "mix-1.wav")[0].shape == (2, 96000)
    assert f"wrote {tmp_path / 'mix-1.wav'}:" in capsys.readouterr().out
    assert main(["render", str(song), "-o", str(tmp_path / "mix.wav"), "--force"]) == 0
    assert read_audio(tmp_path / "mix.wav")[0].shape == (2, 96000) and not (tmp_path / "mix-2.wav").exists()
    assert f"wrote {tmp_path / 'mix.wav'}:" in capsys.readouterr().out


def test_render_runs_every_step_and_mixes_at_the_host_rate(tmp_path, capsys):
    t = np.arange(44100) / 44100
    source = write_wav(tmp_path / "pad.wav", (0.2 * np.sin(2 * np.pi * 110 * t))[None].astype(np.float32), 44100, "24")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    song = write_song(tmp_path, """
sample_rate = 48000
length_bars = 4
[model]
id = "tiny-random"
steps = 1
[tempo]
bpm = 240
meter = "6/8"
changes = [{ bar = 3, bpm = 200 }]
[master]
effects = [{ plugin = "Limiter" }]
[[tracks]]
name = "pad"
clips = [{ path = "pad.wav", bar = 1, name = "src", fade_in = 0.01 }]
[[tracks]]
name = "beat"
effects = [{ plugin = "Reverb", room_size = 0.2 }]
[[steps]]
op = "inpaint"
track = "pad"
name = "fixed"
clip = "src"
range = [1.5, 2]
seed = 1
[[steps]]
op = "extend"
track = "pad"
clip = "fixed"
seed = 2
[[steps]]
op = "loop"
track = "beat"
name = "loop"
bar = 2
bars = 1
prompt = "drums"
seed = 3
[[steps]]
op = "variation"
track = "beat"
clip = "loop"
init_noise_level = 0.5
seed = 4
""")
    out = tmp_path / "out" / "mix.wav"
    assert main(["render", str(song), "-o", str(out), "--steps", "1"]) == 0
    printed = capsys.readouterr().out
    for i, op in enumerate(["inpaint", "extend", "loop", "variation"]):  # each step's progress, then its file
        assert f"step {i + 1}/4 {op}: sample 1/1" in printed and f"steps[{i}] {op}: wrote {tmp_path / 'out'}" in printed
    assert f"wrote {out}:" in printed

    tempo_map = render.tempo_map({"bpm": 240, "meter": "6/8", "changes": [{"bar": 3, "bpm": 200}]}, tmp_path)
    audio, rate = read_audio(out)
    assert rate == 48000 and audio.shape == (2, tempo_map.bar_to_sample(4, 48000))
    assert np.abs(audio).max() > 0
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest
    clips = sorted((tmp_path / "out" / "mix_clips").glob("*.wav"))
    assert sorted(p.name.split("_")[1] for p in clips) == ["extend", "inpaint", "loop", "variation"]
    for path in clips:
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert read_audio(path)[1] == 48000 and sidecar["sample_rate"] == 48000
        assert read_audio(path)[0].shape[1] == sidecar["length"]
    loop = json.loads(next(p for p in clips if "_loop_" in p.name).with_suffix(".json").read_text())
    assert (loop["start_bar"], loop["end_bar"], loop["meter"], loop["seed"]) == (2, 3, "6/8", 3)  # as in the song


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_examples_are_valid_songs(name, tmp_path):
    """Every example builds and its steps check out (they run in the showcase test and the README)."""
    arrangement, named = render.arrange(render.load_song(EXAMPLES / name), EXAMPLES, tmp_path)
    assert isinstance(arrangement, Arrangement) and arrangement.song_end > 0


def test_the_showcase_renders(tmp_path):
    out = tmp_path / "showcase.wav"
    assert main(["render", str(EXAMPLES / "showcase.toml"), "-o", str(out), "--steps", "1"]) == 0
    song = render.load_song(EXAMPLES / "showcase.toml")
    tempo_map = render.tempo_map(song["tempo"], EXAMPLES)
    audio, rate = read_audio(out)
    assert rate == 48000 and audio.shape[1] == tempo_map.bar_to_sample(6, 48000)
