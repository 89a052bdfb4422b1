"""The JSON host bridge (`sa3 host`): requests checked with errors in the producer's terms, and every
action run through a real engine process, placed sample-exactly at 48 kHz across a tempo change and a
7/8 meter, sources untouched; progress lines, a cancel file and SIGTERM reach the caller."""

import hashlib
import json
import signal
import subprocess
from fractions import Fraction

import numpy as np
import pytest

from bridge.client import EngineClient
from bridge.spawn import EngineProcess
from bridge.timeline import Meter, MeterChange, TempoChange, TempoMap
from plugin_shell.hostbridge import RequestError, handle, parse
from plugin_shell.hostbridge.run import sa3_command
from sa3_engine.audio import read_audio, write_wav

RATE = 48000
# 120 bpm, 4/4 for one bar, then 7/8; the tempo changes to 150 in the middle of bar 3 (quarter 11)
TEMPO_MAP = TempoMap((TempoChange(0, 120), TempoChange(11, 150)), (MeterChange(0, Meter(4, 4)), MeterChange(4, Meter(7, 8))))
JSON_MAP = {"tempos": [{"quarter": 0, "bpm": 120}, {"quarter": "11", "bpm": 150, "sample": 264000}],
            "meters": [{"quarter": 0, "numerator": 4, "denominator": 4}, {"quarter": 4, "numerator": 7, "denominator": 8}]}
OFFSET = 4800  # the clip plays its file from 0.1 s in


def at(bar) -> int:
    return TEMPO_MAP.bar_to_sample(Fraction(bar), RATE)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with EngineProcess(tmp_path_factory.mktemp("engine")) as process:
        yield process


@pytest.fixture
def source(tmp_path):
    """A float WAV: 0.1 s of lead-in, then 3 bars' worth of tones; its region plays bars 1..4."""
    n = OFFSET + at(4) - at(1) + 9600
    t = np.arange(n) / RATE
    audio = 0.3 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 331 * t)]).astype(np.float32)
    return write_wav(tmp_path / "source.wav", audio, RATE, bit_depth="float")


def request(tmp_path, action, engine=None, source=None, **fields):
    data = {"sa3_host_bridge": 1, "action": action, "sample_rate": RATE, "tempo_map": JSON_MAP, "track": "Keys",
            "output_dir": str(tmp_path / "out"), "project": "song", "prompt": "warm keys", "seed": 3, "steps": 2}
    if source is not None:
        data["clip"] = {"path": str(source), "position": at(1), "length": at(4) - at(1), "offset": OFFSET}
    if engine is not None:
        data["engine"] = {"connection_file": str(engine.connection_file)}
    return {**data, **fields}


def run_cli(tmp_path, data, *extra):
    path = tmp_path / "request.json"
    path.write_text(json.dumps(data))
    proc = subprocess.run([*sa3_command(), "host", str(path), *extra],
                          capture_output=True, text=True, timeout=600)
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    return proc.returncode, events


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- requests are checked before anything runs -----------------------------------------------------


def error_of(data) -> RequestError:
    with pytest.raises(RequestError) as caught:
        parse(data)
    return caught.value


def test_errors_name_the_field(tmp_path, source):
    assert error_of({**request(tmp_path, "loop", position=0), "sa3_host_bridge": 2}).field == "sa3_host_bridge"
    assert error_of(request(tmp_path, "loop", position=0, colour="red")).field == "colour"
    assert error_of(request(tmp_path, "shuffle", position=0)).field == "action"
    assert error_of(request(tmp_path, "inpaint", selection={"start": at(2), "end": at(3)})).field == "clip"
    assert error_of(request(tmp_path, "loop", position=0, bars=0)).field == "bars"
    assert error_of(request(tmp_path, "variation", source=source, init_noise_level=1.5)).field == "init_noise_level"
    bad_meter = {**JSON_MAP, "meters": [{"quarter": 0, "numerator": 7, "denominator": 6}]}
    assert error_of(request(tmp_path, "loop", position=0, tempo_map=bad_meter)).field == "tempo_map.meters[0]"
    missing = request(tmp_path, "loop", position=0)
    del missing["track"]
    assert str(error_of(missing)) == "track: missing"


def test_positions_in_errors_read_in_bars_and_seconds(tmp_path, source):
    late = request(tmp_path, "inpaint", source=source, selection={"start": at(3), "end": at(5)})
    error = error_of(late)
    assert error.field == "selection"
    assert f"sample {at(5)} (bar 6 beat 1, {at(5) / RATE:.3f} s)" in str(error)
    assert f"sample {at(4)} (bar 5 beat 1" in str(error)  # where the clip ends
    early_end = request(tmp_path, "extend", source=source, song_end=at(3))
    assert error_of(early_end).field == "song_end" and "bar 4 beat 1" in str(error_of(early_end))


def test_a_tempo_map_the_host_disagrees_with_is_refused(tmp_path):
    """A tempo change whose sample (as the DAW computed it) does not follow from the tempos before it
    means the map is incomplete: refused rather than placing clips off the DAW's grid."""
    wrong = {**JSON_MAP, "tempos": [{"quarter": 0, "bpm": 120}, {"quarter": 11, "bpm": 150, "sample": 270000}]}
    error = error_of(request(tmp_path, "loop", position=0, tempo_map=wrong))
    assert error.field == "tempo_map.tempos[1].sample" and "264000" in str(error)
    eighths = {**JSON_MAP, "tempos": [{"quarter": 0, "bpm": 240, "note_type": 8}, {"quarter": 11, "bpm": 150}]}
    assert parse(request(tmp_path, "loop", position=0, tempo_map=eighths)).tempo_map == TEMPO_MAP


def test_a_clip_longer_than_its_file_is_refused_in_seconds(tmp_path, source, engine):
    data = request(tmp_path, "variation", engine, source)
    data["clip"]["length"] = 10 * RATE
    reply = handle(data)
    assert not reply["ok"] and reply["error"]["field"] == "clip.length"
    assert "source.wav" in reply["error"]["message"] and " s)" in reply["error"]["message"]


# -- every action through the engine ---------------------------------------------------------------


def test_loop_across_the_tempo_change_is_placed_on_the_grid_and_warped(tmp_path, engine):
    code, events = run_cli(tmp_path, request(tmp_path, "loop", engine, position=at(2), bars=2))
    reply = events[-1]
    assert code == 0 and reply["event"] == "reply" and reply["ok"], reply
    assert any(e["event"] == "progress" for e in events[:-1])
    (result,) = reply["results"]
    assert (result["position"], result["length"]) == (at(2), at(4) - at(2))
    assert result["relation"] == "new" and result["source"] is None and result["track"] == "Keys"
    audio, rate = read_audio(result["path"])
    assert rate == RATE and audio.shape == (2, at(4) - at(2))
    sidecar = json.loads(open(result["sidecar"]).read())
    assert sidecar["warp"]["applied"] and [s["bpm"] for s in sidecar["warp"]["segments"]] == [120, 150]
    assert result["warp"] == sidecar["warp"]


def test_inpaint_is_a_take_over_the_clip_identical_outside_the_selection(tmp_path, engine, source):
    before = sha(source)
    selection = {"start": at(Fraction(3, 2)), "end": at(Fraction(5, 2))}
    reply = handle(request(tmp_path, "inpaint", engine, source, selection=selection))
    assert reply["ok"], reply
    (result,) = reply["results"]
    assert (result["position"], result["length"], result["offset"]) == (at(1), at(4) - at(1), 0)
    assert result["relation"] == "take" and result["placement"] == "new_take_lane"
    assert result["source"] == {"path": str(source), "position": at(1), "length": at(4) - at(1), "offset": OFFSET}
    take, _ = read_audio(result["path"])
    original, _ = read_audio(source)
    played = original[:, OFFSET : OFFSET + at(4) - at(1)]
    start, end = selection["start"] - at(1), selection["end"] - at(1)
    fade = round(0.03 * RATE)
    assert np.array_equal(take[:, : start - fade], played[:, : start - fade])
    assert np.array_equal(take[:, end + fade :], played[:, end + fade :])
    assert not np.allclose(take[:, start + fade : end - fade], played[:, start + fade : end - fade])
    assert sha(source) == before


def test_extend_starts_right_after_the_clip_and_ends_at_the_song_end(tmp_path, engine, source):
    before = sha(source)
    reply = handle(request(tmp_path, "extend", engine, source, song_end=at(6)))
    assert reply["ok"], reply
    (result,) = reply["results"]
    assert (result["position"], result["length"]) == (at(4), at(6) - at(4))
    assert result["relation"] == "continuation" and result["warp"] == {"applied": False}
    assert read_audio(result["path"])[0].shape == (2, at(6) - at(4))
    assert sha(source) == before


def test_variation_is_a_take_of_the_same_length(tmp_path, engine, source):
    reply = handle(request(tmp_path, "variation", engine, source, init_noise_level=0.5))
    assert reply["ok"], reply
    (result,) = reply["results"]
    assert (result["position"], result["length"], result["relation"]) == (at(1), at(4) - at(1), "take")
    assert json.loads(open(result["sidecar"]).read())["backend"]["init_noise_level"] == 0.5


# -- cancel and progress reach the caller ----------------------------------------------------------


def test_a_cancel_file_stops_the_request_and_nothing_is_placed(tmp_path, engine):
    cancel = tmp_path / "cancel"
    cancel.touch()
    code, events = run_cli(tmp_path, request(tmp_path, "loop", engine, position=0, cancel_file=str(cancel)))
    assert code == 3 and events[-1]["cancelled"] and events[-1]["error"]["code"] == "cancelled"
    assert not list((tmp_path / "out").glob("*.wav"))


def test_sigterm_cancels_a_running_request(tmp_path, engine):
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request(tmp_path, "loop", engine, position=0, bars=8, steps=1000)))
    proc = subprocess.Popen([*sa3_command(), "host", str(path)], stdout=subprocess.PIPE,
                            text=True)
    try:
        first = json.loads(proc.stdout.readline())
        assert first["event"] == "progress"
        proc.send_signal(signal.SIGTERM)
        events = [json.loads(line) for line in proc.stdout]
        assert proc.wait(120) == 3 and events[-1]["cancelled"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not list((tmp_path / "out").glob("*.wav"))


def test_an_engine_is_started_when_none_runs_and_keeps_serving(tmp_path):
    connection_file = tmp_path / "engine" / "engine.json"
    connection_file.parent.mkdir()
    data = {**request(tmp_path, "loop", position=0, bars=1), "engine": {"connection_file": str(connection_file)}}
    code, events = run_cli(tmp_path, data)
    try:
        assert code == 0 and events[-1]["ok"], events[-1]
        assert any(e["event"] == "status" and "starting the engine" in e["message"] for e in events)
        with EngineClient(connection_file) as client:
            assert client.status() is not None  # still serving: the next request skips the start
    finally:
        if connection_file.exists():
            with EngineClient(connection_file) as client:
                client.shutdown()
