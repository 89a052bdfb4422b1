from fractions import Fraction

import numpy as np
import pedalboard
import pytest

from bridge.timeline import Meter
from daw_presets import (
    ChainPreset,
    DawPreset,
    PresetError,
    PromptTemplate,
    build_chain,
    build_effects,
    effect_specs,
    list_presets,
    load_preset,
    load_preset_file,
    render_clip_name,
    render_file_name,
    render_prompt,
    run_presets_cli,
)

GOOD_DAW = """
display_name = "Test DAW"
description = "a DAW for tests"
sample_rate = 48000
bit_depth = 32
file_name = "{track}_{op}_{seed}"
clip_name = "SA3 {op} {prompt}"
placement = "new_take_lane"
integration = "plugin"
host_timing = "playhead"
"""


def write(tmp_path, name, text):
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_shipped_preset_validates():
    shipped = list_presets()
    expected_types = {"daw": DawPreset, "prompt": PromptTemplate, "chain": ChainPreset}
    assert {kind for kind, _ in shipped} == set(expected_types)
    for kind, name in shipped:
        preset = load_preset(kind, name)
        assert isinstance(preset, expected_types[kind])
        assert preset.name == name


def test_the_six_daws_and_the_test_host_are_shipped_with_their_own_choices():
    daws = {name: load_preset("daw", name) for _, name in list_presets("daw")}
    assert set(daws) == {"ableton_live", "reaper", "bitwig_studio", "logic_pro", "fl_studio", "ardour", "offline"}
    assert daws["ableton_live"].host_timing == "song_tempo"  # the Extensions SDK has no meter
    assert daws["reaper"].placement == "new_take_lane"
    assert {d.bit_depth for d in daws.values()} == {24, 32}
    assert (daws["reaper"].wav_format, daws["offline"].wav_format) == ("24", "float")


def test_a_valid_preset_file_loads_from_anywhere(tmp_path):
    preset = load_preset_file("daw", write(tmp_path, "my_daw", GOOD_DAW))
    assert (preset.name, preset.sample_rate, preset.bit_depth) == ("my_daw", 48000, 32)


@pytest.mark.parametrize(
    ("kind", "text", "field", "problem"),
    [
        ("daw", GOOD_DAW.replace("48000", "-1"), "sample_rate", ">= 8000"),
        ("daw", GOOD_DAW.replace("48000", '"48k"'), "sample_rate", "must be an integer"),
        ("daw", GOOD_DAW + "sampel_rate = 44100\n", "sampel_rate", "unknown field"),
        ("daw", GOOD_DAW.replace('"new_take_lane"', '"somewhere"'), "placement", "new_track_below"),
        ("daw", GOOD_DAW.replace("bit_depth = 32", "bit_depth = 20"), "bit_depth", "16, 24, 32"),
        ("daw", GOOD_DAW.replace("{track}", "{trak}"), "file_name", "unknown slot {trak}"),
        ("daw", GOOD_DAW.replace("_{seed}", ""), "file_name", "names never repeat"),
        ("daw", GOOD_DAW.replace("{op} {prompt}", "{0}"), "clip_name", "plain named slots"),
        ("daw", GOOD_DAW.replace('display_name = "Test DAW"', ""), "display_name", "missing"),
        ("daw", GOOD_DAW.replace("sample_rate = 48000", "sample_rate = 48000 ="), "(file)", "not valid TOML"),
        (
            "prompt",
            'description = "d"\ntrack_type = "music"\ntemplate = "Genre: {prompt}"\n',
            "template",
            "TrackType: Music",
        ),
        (
            "prompt",
            'description = "d"\ntrack_type = "sfx"\ntemplate = "TrackType: SFX, {prompt}"\n[defaults]\npromt = "x"\n',
            "defaults.promt",
            "not a slot",
        ),
        ("prompt", 'description = "d"\ntrack_type = "speech"\ntemplate = "x"\n', "track_type", "music"),
        (
            "prompt",
            'description = "d"\ntrack_type = "sfx"\ntemplate = "TrackType: SFX, {prompt}, BPM: {bpm}"\n',
            "template",
            "{prompt} must come last",
        ),
        (
            "prompt",
            'description = "d"\ntrack_type = "sfx"\ntemplate = "TrackType: SFX, {tempo}"\n',
            "template",
            "unknown slot {tempo}",
        ),
        ("chain", 'description = "d"\neffects = [{ plugin = "Reverbb" }]\n', "effects[0].plugin", "Reverbb"),
        (
            "chain",
            'description = "d"\neffects = [{ plugin = "Gain" }, { plugin = "Reverb", room_sise = 0.5 }]\n',
            "effects[1].room_sise",
            "room_size",
        ),
        (
            "chain",
            'description = "d"\neffects = [{ plugin = "Reverb", room_size = 2.0 }]\n',
            "effects[0]",
            "between",
        ),
        (
            "chain",
            'description = "d"\neffects = [{ plugin = "Gain", gain_db = "loud" }]\n',
            "effects[0].gain_db",
            "number",
        ),
        (
            "chain",
            'description = "d"\neffects = [{ plugin = "LadderFilter", mode = "LPF99" }]\n',
            "effects[0].mode",
            "LPF24",
        ),
        ("chain", 'description = "d"\neffects = [{ plugin = "Chain" }]\n', "effects[0].plugin", "unknown"),
        ("chain", 'description = "d"\neffects = []\n', "effects", "at least one"),
    ],
)
def test_broken_presets_name_the_file_and_field(tmp_path, kind, text, field, problem):
    path = write(tmp_path, "broken", text)
    with pytest.raises(PresetError) as caught:
        load_preset_file(kind, path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {field}")
    assert problem in message


def test_unknown_kind_and_name_are_refused():
    with pytest.raises(ValueError, match="unknown preset kind 'synth'"):
        load_preset("synth", "x")
    with pytest.raises(ValueError, match="no daw preset 'cubase'; available: ableton_live"):
        load_preset("daw", "cubase")
    with pytest.raises(ValueError, match="no chain preset"):
        build_chain("../daws/reaper")


def test_templates_put_the_musical_tags_before_the_producers_words():
    template = load_preset("prompt", "music_loop")
    text = render_prompt(template, bpm=127.6, key="A minor", meter=Meter(6, 8), bars=8, prompt="dusty breakbeat")
    assert text == (
        "TrackType: Music, VocalType: Instrumental, BPM: 128, Time Signature: 6/8, Key: A minor, "
        "seamless 8 bar loop, dusty breakbeat"
    )
    # no words from the producer: the template's default prompt
    assert render_prompt(template, bpm=130, key="F", meter="4/4", bars=4).endswith(
        "seamless 4 bar loop, Genre: electronic, Instruments: drums, bass, synthesizer"
    )
    assert render_prompt("TrackType: SFX, {prompt} at {bpm} bpm", prompt="door slam", bpm=99.5) == (
        "TrackType: SFX, door slam at 100 bpm"
    )


def test_bpm_is_rounded_half_up_and_bars_are_exact():
    assert render_prompt("BPM: {bpm}", bpm=126.5) == "BPM: 127"  # round() would give 126
    assert render_prompt("BPM: {bpm}", bpm=Fraction(251, 2)) == "BPM: 126"
    assert render_prompt("{bars} bars", bars=Fraction(3, 2)) == "1.5 bars"
    assert render_prompt("{bars} bars", bars=4.0) == "4 bars"


@pytest.mark.parametrize("name", [name for _, name in list_presets("prompt")])
def test_every_shipped_template_renders_from_the_musical_context(name):
    template = load_preset("prompt", name)
    context = {"bpm": 120.0, "key": "C major", "meter": Meter(4, 4), "bars": 4, "prompt": "glass shatter"}
    text = render_prompt(template, **context)
    assert "{" not in text and text.startswith("TrackType: ") and text.endswith("glass shatter")


def test_empty_slots_drop_their_part_instead_of_failing():
    template = load_preset("prompt", "music_loop")
    for key in ("", " ", None):
        text = render_prompt(template, bpm=120, key=key, meter="4/4", bars=4, prompt="pads")
        assert "Key" not in text and ", ," not in text
        assert text == "TrackType: Music, VocalType: Instrumental, BPM: 120, Time Signature: 4/4, seamless 4 bar loop, pads"
    # a slot nobody gives is empty too; one with a default falls back to it
    assert render_prompt(template) == "TrackType: Music, VocalType: Instrumental, " + template.defaults["prompt"]
    assert render_prompt(load_preset("prompt", "sfx_oneshot"), prompt="") == "TrackType: SFX"
    with pytest.raises(ValueError, match="slot 'bpm' must be a number"):
        render_prompt(template, bpm="fast", key="C", meter="4/4", bars=4)


def test_file_and_clip_names_are_safe_and_bounded():
    daw = load_preset("daw", "ableton_live")
    slots = dict(project="My Song", track="Bass/Synth: 'sub'", op="loop", bar=5, bar_end=13, seed=42)
    name = render_file_name(daw, **slots, timestamp="20250101T120000", prompt="x")
    assert name == "My-Song_Bass-Synth-sub_loop_bar5-13_seed42_20250101T120000"
    odd = render_file_name(
        daw, **{**slots, "track": "../" * 40, "project": "é" * 99}, timestamp="t", prompt="x"
    )
    assert odd == "é" * 40 + "_track_loop_bar5-13_seed42_t"
    clip = render_clip_name(daw, op="inpaint", prompt="warm\nanalog " + "pads " * 30)
    assert clip.startswith("SA3 inpaint warm analog pads") and len(clip) == 64 and "\n" not in clip


@pytest.mark.parametrize("name", [name for _, name in list_presets("chain")])
def test_every_chain_builds_and_processes_audio(name):
    board = build_chain(name)
    assert isinstance(board, pedalboard.Pedalboard) and len(board) == len(load_preset("chain", name).effects)
    t = np.arange(4410, dtype=np.float32) / 44100
    audio = np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)]).astype(np.float32) * 0.9
    source = audio.copy()
    out = board(audio, 44100)
    assert out.shape == audio.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert not np.allclose(out, audio, atol=1e-4)
    np.testing.assert_array_equal(audio, source)  # the source buffer is never modified


def test_chain_parameters_reach_pedalboard(tmp_path):
    path = write(
        tmp_path, "half", 'description = "half"\neffects = [{ plugin = "Gain", gain_db = -6.0206 }]\n'
    )
    audio = np.full((2, 64), 0.5, dtype=np.float32)
    out = build_chain(load_preset_file("chain", path))(audio, 48000)
    np.testing.assert_allclose(out, 0.25, rtol=1e-4)


def test_cli_listing():
    everything = run_presets_cli()
    for _, name in list_presets():
        assert name in everything
    assert everything.splitlines()[0] == "daw presets (daws/):"
    chains_only = run_presets_cli("chain")
    assert "output_safety" in chains_only and "reaper" not in chains_only
    with pytest.raises(ValueError, match="unknown preset kind"):
        run_presets_cli("synths")


def test_effects_refuse_containers_and_plugin_hosts():
    """Song files and chain presets share one effect parser: no Mix/Chain containers and no VST3/AU
    hosts, which would load native code named by a file."""
    for name in ("Mix", "Chain", "Pedalboard", "VST3Plugin", "AudioUnitPlugin", "load_plugin"):
        with pytest.raises(PresetError, match=r"song: x\[0\].plugin: unknown pedalboard effect"):
            effect_specs([{"plugin": name}], "song", "x")
    with pytest.raises(PresetError, match="x: must be a list"):
        effect_specs({"plugin": "Gain"}, "song", "x")
    specs = effect_specs([{"plugin": "LadderFilter", "mode": "LPF24"}], "song", "x")
    (ladder,) = build_effects(specs, "song", "x")
    assert ladder.mode == pedalboard.LadderFilter.Mode.LPF24
