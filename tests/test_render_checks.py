"""`sa3 render` on bad songs and at the song's edges: one-line errors in bars and seconds before any model
loads, the documented format, the mixdown's sidecar, and clips cut at the song end said out loud."""

import json
from pathlib import Path

import numpy as np
import pytest

from plugin_shell import render
from sa3_engine.audio import read_audio, write_wav
from sa3_engine.cli.main import main

DOCS = Path(__file__).resolve().parents[1] / "docs"
HEAD = "sample_rate = 48000\n[tempo]\nbpm = 120\n"  # 2 s per bar


def write_song(folder: Path, text: str) -> Path:
    (folder / "song.toml").write_text(text)
    return folder / "song.toml"


def one_bar(folder: Path, name="clip.wav", bars=1) -> None:
    write_wav(folder / name, np.full((2, bars * 96000), 0.1, np.float32), 48000, "float")


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: what is checked here must fail before that."""

    from sa3_engine.generation.pipeline import Pipeline

    def load(*args, **kwargs):
        raise AssertionError("a model was loaded before the song was checked")

    monkeypatch.setattr(Pipeline, "load", load)


def render_fails(capsys, song: Path, out: Path) -> str:
    assert main(["render", str(song), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sa3 render: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists() and not out.with_suffix(".json").exists()
    return err


def test_a_tempo_midi_that_is_not_midi_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "tempo.mid").write_bytes(b"not midi at all")
    song = write_song(tmp_path, 'sample_rate = 48000\n[tempo]\nmidi = "tempo.mid"\n')
    err = render_fails(capsys, song, tmp_path / "mix.wav")
    assert "tempo.midi: " in err and "tempo.mid is not a readable MIDI file" in err


def test_a_folder_given_as_the_song_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = render_fails(capsys, Path("."), tmp_path / "x.wav")
    assert "is a folder" in err


def test_a_corrupt_clip_is_refused_before_the_model_loads(tmp_path, capsys, no_model):
    (tmp_path / "clip.wav").write_bytes(b"RIFF" + b"\x00" * 40)
    song = write_song(tmp_path, HEAD + "[[tracks]]\nname = 'a'\nclips = [{ path = 'clip.wav', bar = 1, name = 'c' }]\n"
                      "[[steps]]\nop = 'variation'\ntrack = 'a'\nclip = 'c'\n")
    err = render_fails(capsys, song, tmp_path / "mix.wav")
    assert "tracks[0].clips[0].path: " in err and "clip.wav" in err


def test_a_selection_outside_the_clip_is_refused_in_bars_before_the_model_loads(tmp_path, capsys, no_model):
    one_bar(tmp_path)
    song = write_song(tmp_path, HEAD + "[[tracks]]\nname = 'a'\nclips = [{ path = 'clip.wav', bar = 1, name = 'c' }]\n"
                      "[[steps]]\nop = 'inpaint'\ntrack = 'a'\nclip = 'c'\nrange = [2, 3]\n")
    err = render_fails(capsys, song, tmp_path / "mix.wav")
    assert "steps[0] (inpaint): selection: bar 2 (2.00 s) to bar 3 (4.00 s) is not inside the clip" in err
    assert "clip.wav, bar 1 (0.00 s) to bar 2 (2.00 s)" in err


def test_a_song_end_before_the_clip_end_is_refused_in_bars_before_the_model_loads(tmp_path, capsys, no_model):
    one_bar(tmp_path, bars=2)
    song = write_song(tmp_path, "length_bars = 1\n" + HEAD + "[[tracks]]\nname = 'a'\n"
                      "clips = [{ path = 'clip.wav', bar = 1, name = 'c' }]\n"
                      "[[steps]]\nop = 'extend'\ntrack = 'a'\nclip = 'c'\n")
    err = render_fails(capsys, song, tmp_path / "mix.wav")
    assert "steps[0] (extend): the song ends at bar 2 (2.00 s), not after the clip's end at bar 3 (4.00 s)" in err


def test_the_mixdown_gets_a_sidecar(tmp_path, capsys):
    one_bar(tmp_path)
    song = write_song(tmp_path, "length_bars = 2\n" + HEAD + "[[tracks]]\nname = 'a'\n"
                      "clips = [{ path = 'clip.wav', bar = 1 }]\n")
    assert main(["render", str(song), "-o", str(tmp_path / "mix.wav")]) == 0
    meta = json.loads((tmp_path / "mix.json").read_text())
    assert (meta["file"], meta["song"], meta["sample_rate"], meta["length"]) == ("mix.wav", str(song), 48000, 192000)
    assert meta["end_bar"] == 3 and meta["format"] == "24" and meta["warnings"] == []
    assert meta["tracks"]["a"][0]["path"] == str(tmp_path / "clip.wav") and meta["tracks"]["a"][0]["start_bar"] == 1
    assert "sidecar mix.json" in capsys.readouterr().out


def test_a_loop_longer_than_the_song_is_cut_with_a_warning(tmp_path, capsys):
    song = write_song(tmp_path, "length_bars = 1\nsample_rate = 48000\n[tempo]\nbpm = 480\n"
                      "[model]\nid = 'tiny-random'\nsteps = 1\n[[tracks]]\nname = 'a'\n"
                      "[[steps]]\nop = 'loop'\ntrack = 'a'\nbar = 1\nbars = 3\nseed = 1\n")
    assert main(["render", str(song), "-o", str(tmp_path / "mix.wav")]) == 0
    err = capsys.readouterr().err
    assert "sa3 render: warning: " in err and "ends at bar 4 (1.50 s), after the song end at bar 2 (0.50 s)" in err
    assert read_audio(tmp_path / "mix.wav")[0].shape[1] == 24000
    warnings = json.loads((tmp_path / "mix.json").read_text())["warnings"]
    assert len(warnings) == 1 and "cuts it" in warnings[0]


def test_the_song_format_is_documented_with_an_example_that_is_a_valid_song(tmp_path, capsys):
    doc = (DOCS / "song-format.md").read_text()
    assert render.SONG_FORMAT in doc  # the help's example and the document's are one text
    one_bar(tmp_path, "keys.wav")
    song = render.load_song(write_song(tmp_path, render.SONG_FORMAT))
    render.dry_run(song, tmp_path, 44100, 120.0)
    for field in sorted(render.SONG_FIELDS) + sorted(set().union(*render.STEP_FIELDS.values())):
        assert f"`{field}`" in doc, field
    with pytest.raises(SystemExit):
        main(["render", "--help"])
    assert render.SONG_FORMAT.splitlines()[5] in capsys.readouterr().out
