"""Shared pieces of the procedural synthesizer: the clip record, musical time, pitch, envelopes,
band-limited oscillators, shaped noise, stereo placement and seamless loop rendering.

Everything is vectorised numpy and deterministic given the ``numpy.random.Generator`` passed in.
Audio is float32 ``(2, samples)`` at ``SAMPLE_RATE`` throughout, as in the rest of the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SAMPLE_RATE = 44100
MIN_SECONDS, MAX_SECONDS = 1.0, 30.0

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
    "harmonic minor": (0, 2, 3, 5, 7, 8, 11),
    "major pentatonic": (0, 2, 4, 7, 9),
    "minor pentatonic": (0, 3, 5, 7, 10),
}

# Meter -> (quarter notes per bar, sixteenth-note steps per bar, accent groups in eighth notes).
# Tempo is always quarter notes per minute, as DAWs count it, whatever the meter.
METERS: dict[str, tuple[float, int, tuple[int, ...]]] = {
    "4/4": (4.0, 16, (2, 2, 2, 2)),
    "3/4": (3.0, 12, (2, 2, 2)),
    "6/8": (3.0, 12, (3, 3)),
    "7/8": (3.5, 14, (2, 2, 3)),
}


@dataclass
class Clip:
    """One generated example: audio, its caption(s) and the facts an evaluation can check."""

    audio: np.ndarray  # (2, samples) float32 at SAMPLE_RATE
    category: str  # drums | bass | lead | pad | pluck | arp | sfx
    meta: dict = field(default_factory=dict)  # bpm, key, scale, meter, bars, loop, tonal, instrument, ...
    captions: list[str] = field(default_factory=list)  # paraphrases of one description; [0] is the main one

    @property
    def caption(self) -> str:
        return self.captions[0] if self.captions else ""

    @property
    def seconds(self) -> float:
        return self.audio.shape[1] / SAMPLE_RATE


@dataclass(frozen=True)
class Grid:
    """Musical time of a loop: tempo, meter, bars -> exact sample positions."""

    bpm: float
    meter: str
    bars: int

    @property
    def quarters_per_bar(self) -> float:
        return METERS[self.meter][0]

    @property
    def steps_per_bar(self) -> int:
        return METERS[self.meter][1]

    @property
    def step_seconds(self) -> float:
        return 15.0 / self.bpm  # a sixteenth note

    @property
    def samples(self) -> int:
        return int(round(self.bars * self.steps_per_bar * self.step_seconds * SAMPLE_RATE))

    def step_sample(self, step: np.ndarray | int) -> np.ndarray:
        """Sample index of sixteenth ``step`` counted from the loop start."""
        return np.round(np.asarray(step) * self.step_seconds * SAMPLE_RATE).astype(np.int64)


def choose_grid(rng: np.random.Generator, meters=tuple(METERS), bpm_range=(70.0, 180.0)) -> Grid:
    """A tempo, meter and bar count whose loop lasts between MIN_SECONDS and MAX_SECONDS."""
    bpm = float(rng.integers(int(bpm_range[0]), int(bpm_range[1]) + 1))
    meter = str(rng.choice(meters))
    bar_seconds = METERS[meter][0] * 60.0 / bpm
    options = [b for b in (1, 2, 4, 8) if MIN_SECONDS <= b * bar_seconds <= MAX_SECONDS]
    weights = np.array([1.0 / (1 + i) for i in range(len(options))])  # shorter loops are cheaper to train on
    bars = int(rng.choice(options, p=weights / weights.sum()))
    return Grid(bpm, meter, bars)


def choose_key(rng: np.random.Generator, scales=tuple(SCALES)) -> tuple[int, str]:
    return int(rng.integers(12)), str(rng.choice(scales))


def key_name(tonic: int, scale: str) -> str:
    return f"{NOTE_NAMES[tonic]} {scale}"


def scale_midi(tonic: int, scale: str, degrees: np.ndarray, base_midi: int) -> np.ndarray:
    """MIDI notes of scale ``degrees`` (0 = tonic, may be negative or past one octave) above ``base_midi``
    rounded down to the tonic's pitch class."""
    steps = np.asarray(SCALES[scale])
    degrees = np.asarray(degrees)
    octave, index = np.divmod(degrees, len(steps))
    root = base_midi - ((base_midi - tonic) % 12)
    return root + 12 * octave + steps[index]


def midi_hz(midi: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


# ------------------------------------------------------------------------------------------------ envelopes


def adsr(n: int, attack: float, decay: float, sustain: float, release: float, gate: int) -> np.ndarray:
    """Linear attack, exponential decay to ``sustain``, exponential release after ``gate`` samples (n total)."""
    t = np.arange(n) / SAMPLE_RATE
    a = max(attack, 1e-4)
    env = np.where(t < a, t / a, sustain + (1.0 - sustain) * np.exp(-(t - a) / max(decay, 1e-4)))
    gate_t = gate / SAMPLE_RATE
    level = env[min(gate, n - 1)] if gate < n else env[-1]
    after = t >= gate_t
    env[after] = level * np.exp(-(t[after] - gate_t) / max(release, 1e-4))
    return env


def perc(n: int, decay: float, attack: float = 0.001) -> np.ndarray:
    """A percussive envelope: a short linear attack then exponential decay."""
    t = np.arange(n) / SAMPLE_RATE
    return np.minimum(t / attack, 1.0) * np.exp(-t / decay)


# ---------------------------------------------------------------------------------------------- oscillators

_TABLE = 4096


def _wavetable(shape: str, hz: float) -> np.ndarray:
    """One period of a band-limited waveform whose harmonics stay below Nyquist at ``hz``."""
    harmonics = max(1, min(_TABLE // 2 - 1, int(SAMPLE_RATE / 2 / max(hz, 1.0))))
    k = np.arange(1, harmonics + 1)
    spectrum = np.zeros(_TABLE // 2 + 1, dtype=np.complex128)
    if shape == "saw":
        amp = 1.0 / k
    elif shape == "square":
        amp = np.where(k % 2 == 1, 1.0 / k, 0.0)
    elif shape == "triangle":
        amp = np.where(k % 2 == 1, 1.0 / k**2, 0.0) * np.where((k // 2) % 2 == 0, 1.0, -1.0)
    elif shape == "sine":
        amp = (k == 1).astype(float)
    else:
        raise ValueError(f"unknown oscillator shape {shape!r}")
    spectrum[k] = -1j * amp * (_TABLE / 2)
    table = np.fft.irfft(spectrum, _TABLE)
    return (table / np.max(np.abs(table))).astype(np.float32)


def oscillator(shape: str, hz: np.ndarray | float, n: int, phase0: float = 0.0) -> np.ndarray:
    """A band-limited oscillator (constant or per-sample frequency); "fm" is a two-operator FM bell/bass.

    Wavetable lookup without interpolation: the table is long enough (4096) that the error stays
    around -70 dB, and it is several times faster than interpolating.
    """
    if np.ndim(hz) == 0:
        cycles = phase0 + np.arange(n) * (float(hz) / SAMPLE_RATE)
        top = float(hz)
    else:
        freq = np.asarray(hz, dtype=np.float64)
        cycles = phase0 + np.cumsum(freq) / SAMPLE_RATE
        top = float(freq.max())
    if shape == "fm":
        return np.sin(2 * np.pi * cycles + 1.8 * np.sin(2 * np.pi * 2.0 * cycles))
    cycles -= np.floor(cycles)
    return _wavetable(shape, top)[(cycles * _TABLE).astype(np.int32) & (_TABLE - 1)]


def detuned(shape: str, hz: float, n: int, voices: int, cents: float, rng: np.random.Generator) -> np.ndarray:
    """Stereo ``(2, n)`` stack of detuned oscillators (supersaw-like), voices spread left and right."""
    out = np.zeros((2, n))
    spread = np.linspace(-1.0, 1.0, voices) if voices > 1 else np.zeros(1)
    for s in spread:
        osc = oscillator(shape, hz * 2 ** (s * cents / 1200.0), n, phase0=float(rng.random()))
        out += pan_gains(0.5 + 0.4 * s)[:, None] * osc
    return out / voices


def shaped_noise(rng: np.random.Generator, n: int, low: float, high: float, tilt: float = 0.0,
                 channels: int = 0) -> np.ndarray:
    """White noise band-passed to [low, high] Hz by an FFT mask, with a spectral tilt (dB per octave).

    Mono ``(n,)``, or ``(channels, n)`` independent channels. The FFT runs at the next power of two
    (arbitrary lengths can be prime and slow), then the noise is cut to ``n``.
    """
    size = 1 << max(int(n) - 1, 1).bit_length()
    shape = (channels, size) if channels else (size,)
    spectrum = np.fft.rfft(rng.standard_normal(shape), axis=-1)
    freqs = np.fft.rfftfreq(size, 1.0 / SAMPLE_RATE)
    band = (freqs >= low) & (freqs <= high)
    gain = band * (np.maximum(freqs, 20.0) / 1000.0) ** (tilt / 6.02)
    out = np.fft.irfft(spectrum * gain, size, axis=-1)[..., :n]
    return out / (np.max(np.abs(out)) + 1e-12)


def swept_noise(rng: np.random.Generator, n: int, centre_hz: np.ndarray, width_octaves: float) -> np.ndarray:
    """Stereo noise through a band-pass whose centre follows ``centre_hz`` (one value per frame of 512).

    Built in the short-time spectral domain (random phases, Hann windows at 75 % overlap), so the sweep
    is smooth and the whole thing is a few vectorised FFTs.
    """
    size, hop = 2048, 512
    frames = len(centre_hz)
    freqs = np.fft.rfftfreq(size, 1.0 / SAMPLE_RATE)
    octaves = np.log2(np.maximum(freqs, 1.0)[None, :] / np.asarray(centre_hz)[:, None])
    mag = np.exp(-0.5 * (octaves / width_octaves) ** 2)
    out = np.zeros((2, (frames + 3) * hop))
    window = np.hanning(size)
    for ch in range(2):
        phase = np.exp(2j * np.pi * rng.random(mag.shape))
        grains = np.fft.irfft(mag * phase, size, axis=1) * window
        for part in range(4):  # frames part, part+4, ... never overlap each other: add them as one block
            block = grains[part::4].reshape(-1)
            start = part * hop
            out[ch, start:start + block.size] += block[: out.shape[1] - start]
    out = out[:, :n] if out.shape[1] >= n else np.pad(out, ((0, 0), (0, n - out.shape[1])))
    return out / (np.max(np.abs(out)) + 1e-12)


# ------------------------------------------------------------------------------------------ stereo, loops


def pan_gains(position: float) -> np.ndarray:
    """Equal-power (left, right) gains for a position in [0, 1] (0.5 = centre)."""
    angle = np.clip(position, 0.0, 1.0) * np.pi / 2
    return np.array([np.cos(angle), np.sin(angle)]) * np.sqrt(2.0)


def place(buffer: np.ndarray, sound: np.ndarray, start: int, gain: float = 1.0, pan: float = 0.5) -> None:
    """Mix a mono ``(n,)`` or stereo ``(2, n)`` sound into ``buffer`` at ``start`` (cut at the buffer's end)."""
    stereo = sound if sound.ndim == 2 else pan_gains(pan)[:, None] * sound[None, :]
    end = min(buffer.shape[1], start + stereo.shape[1])
    if end > start:
        buffer[:, start:end] += gain * stereo[:, : end - start]


def wrap(buffer: np.ndarray, length: int) -> np.ndarray:
    """Fold everything past ``length`` back onto the start, so the loop plays seamlessly when repeated."""
    out = buffer[:, :length].copy()
    for start in range(length, buffer.shape[1], length):
        chunk = buffer[:, start:start + length]
        out[:, : chunk.shape[1]] += chunk
    return out


def loop_buffer(grid: Grid, tail_seconds: float) -> np.ndarray:
    """A zeroed stereo buffer for a loop plus room for note tails (later folded back by ``wrap``)."""
    return np.zeros((2, grid.samples + int(tail_seconds * SAMPLE_RATE)))


def normalize(audio: np.ndarray, rng: np.random.Generator, low_db: float = -9.0, high_db: float = -1.0) -> np.ndarray:
    """Peak-normalise to a random level in [low_db, high_db] dBFS, float32."""
    peak = float(np.max(np.abs(audio)))
    if peak < 1e-9:
        return audio.astype(np.float32)
    target = 10 ** (rng.uniform(low_db, high_db) / 20.0)
    return (audio * (target / peak)).astype(np.float32)
