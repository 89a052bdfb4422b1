"""The README's main job, run as a user runs it."""

import subprocess
import sys

from sa3_engine.audio import read_audio


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
