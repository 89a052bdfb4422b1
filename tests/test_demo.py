"""The README's main job, run as a user runs it."""

import subprocess
import sys

import pytest

from sa3_engine.audio import read_audio
from sa3_engine.cli.main import main


def test_demo_places_an_exact_loop_and_says_the_model_is_random(tmp_path):
    # a previous run's files: never overwritten without --force
    (tmp_path / "source.wav").write_bytes(b"earlier source")
    (tmp_path / "mix.wav").write_bytes(b"earlier mix")
    result = subprocess.run(
        [sys.executable, "-m", "sa3_engine.cli.main", "demo", "-o", str(tmp_path), "--bars", "2", "--bpm", "100",
         "--meter", "7/8", "--sample-rate", "44100", "--steps", "2"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RANDOM weights" in result.stdout and "(exact)" in result.stdout and "(unchanged)" in result.stdout
    assert "2-bar loop: sample 2/2" in result.stdout  # progress, stage by stage
    loops = list((tmp_path / "clips").glob("*.wav"))
    assert len(loops) == 1 and loops[0].with_suffix(".json").is_file()
    loop, rate = read_audio(loops[0])
    # 2 bars of 7/8 at 100 quarter-note BPM: 7 eighths = 2.1 s per bar
    assert rate == 44100 and loop.shape == (2, round(2 * 2.1 * 44100))
    assert (tmp_path / "source.wav").read_bytes() == b"earlier source"
    assert (tmp_path / "mix.wav").read_bytes() == b"earlier mix"
    assert f"source clip    {tmp_path / 'source-1.wav'}" in result.stdout
    assert f"mixdown        {tmp_path / 'mix-1.wav'}" in result.stdout
    mix, _ = read_audio(tmp_path / "mix-1.wav")
    assert mix.shape[1] >= loop.shape[1] and abs(mix).max() > 0


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--bars", "0"], "--bars"), (["--meter", "7/9"], "--meter"), (["--bpm", "0"], "--bpm"),
        (["--bpm", "-5"], "--bpm"), (["--sample-rate", "0"], "--sample-rate"), (["--steps", "0"], "--steps"),
    ],
)
def test_bad_demo_options_are_one_line_errors_naming_the_option(tmp_path, capsys, argv, option):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "-o", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith(f"sa3 demo: error: argument {option}: ")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("model", ["nope", "small-music"])
def test_a_model_that_is_not_here_is_a_clear_error_and_writes_nothing(tmp_path, capsys, monkeypatch, model):
    """`--model small-music` is what the demo's own note suggests: without the weights it must say so,
    and leave no source.wav behind."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.delenv("SA3_MODELS_DIR", raising=False)
    assert main(["demo", "-o", str(tmp_path / "out"), "--model", model]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sa3 demo: error: --model: ") and "Traceback" not in err
    assert not (tmp_path / "out").exists()
