"""A tiny random-weight SA3 model written in the released folder layout.

``write_tiny_model`` writes what a Hugging Face SA3 repo holds: ``model_config.json`` (the official
structure, small sizes), ``model.safetensors`` (official key names, from ``SA3Model``) and
``t5gemma-b-b-ul2/`` (a small random T5Gemma encoder plus a byte-level BPE tokenizer trained on built-in
text). Discovery, config parsing, strict loading and text-encoder loading therefore run exactly as with
real weights. What stays real: 44.1 kHz stereo, patch 256 x stride 16 = 4096 samples per latent, the
T5Gemma width 768 (the prompt conditioner's table fixes it), the conditioner and timestep settings. The
output is noise-like audio, not music.

``registry.resolve`` has ``build_tiny_model`` build it once under ``$SA3_CACHE_DIR`` (default ~/.cache/sa3); the folder name carries
a version to bump whenever the layout or the init changes.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import T5GemmaConfig, T5GemmaEncoderModel

from sa3_engine.models.config import CONFIG_FILENAME, TEXT_ENCODER_SUBFOLDER, WEIGHTS_FILENAME
from sa3_engine.models.sa3 import SA3Model

OBJECTIVES = ("rf_denoiser", "rectified_flow")

# Prompt conditioner length: the released 256, since the byte-level tiny tokenizer needs that many tokens
# for tagged prompts. It differs from the code default (128), so code that ignores the config still shows.
TINY_MAX_LENGTH = 256

_LATENT_DIM = 16
_AE_BLOCK = {
    "channels": 32,
    "c_mults": [2],
    "strides": [16],
    "transformer_depths": [2],  # one plain and one midpoint-shifted chunked block
    "latent_dim": _LATENT_DIM,
    "differential": True,
    "dim_heads": 32,
    "dyt": True,
    "variable_stride": True,
    "ff_mult": 3,
    "chunk_size": 32,
    "chunk_midpoint_shift": True,
    "sliding_window": None,
}

TINY_CONFIG: dict = {
    "model_type": "diffusion_cond_inpaint",
    "sample_size": 5292032,
    "sample_rate": 44100,
    "audio_channels": 2,
    "model": {
        "io_channels": _LATENT_DIM,
        "pretransform": {
            "type": "autoencoder",
            "chunked": True,
            "iterate_batch": False,
            "config": {
                "encoder": {"type": "same", "config": {**_AE_BLOCK, "in_channels": 512, "conv_mapping": False}},
                "decoder": {
                    "type": "same",
                    # conv_mapping: the k=3 output conv of SAME-S; one sin-gated block as in SAME-L's decoder
                    "config": {**_AE_BLOCK, "out_channels": 512, "conv_mapping": True, "sinusoidal_blocks": [1]},
                    "soft_clip": False,
                },
                "bottleneck": {"type": "softnorm", "config": {"dim": _LATENT_DIM, "auto_scale": True}},
                "pretransform": {"type": "patched", "config": {"channels": 2, "patch_size": 256}},
                "latent_dim": _LATENT_DIM,
                "downsampling_ratio": 4096,
                "io_channels": 2,
            },
        },
        "conditioning": {
            "cond_dim": 768,
            "configs": [
                {
                    "id": "prompt",
                    "type": "t5gemma",
                    "config": {
                        "model_name": "google/t5gemma-b-b-ul2",
                        "max_length": TINY_MAX_LENGTH,
                        "padding_mode": "learned",
                        "subfolder": TEXT_ENCODER_SUBFOLDER,
                    },
                },
                {
                    "id": "seconds_total",
                    "type": "number",
                    "config": {"min_val": 0, "max_val": 384, "fourier_features_type": "expo"},
                },
            ],
        },
        "diffusion": {
            "type": "dit",
            "diffusion_objective": "rf_denoiser",
            "cross_attention_cond_ids": ["prompt", "seconds_total"],
            "global_cond_ids": ["seconds_total"],
            "local_add_cond_ids": ["inpaint_mask", "inpaint_masked_input"],
            "sampling_distribution_shift_options": None,
            "mask_padding_attention": True,
            "use_effective_length_for_schedule": True,
            "config": {
                "io_channels": _LATENT_DIM,
                "patch_size": 1,
                "embed_dim": 64,
                "depth": 2,
                "num_heads": 2,  # head size 32: the DiT rotates max(head_size / 2, 32) dims
                "cond_token_dim": 768,
                "project_cond_tokens": True,
                "global_cond_dim": 768,
                "project_global_cond": True,
                "transformer_type": "continuous_transformer",
                "global_cond_type": "adaLN",
                "timestep_cond_type": "global",
                "timestep_features_type": "expo",
                "timestep_features_dim": 256,
                "timestep_features_logsnr": False,
                "local_add_cond_dim": 1 + _LATENT_DIM,
                "num_memory_tokens": 4,
                "norm_type": "rms_norm",
                "attn_kwargs": {"qk_norm": "rms", "differential": False},
                "ff_kwargs": {"mult": 4},
            },
        },
    },
}

# T5Gemma encoder: the real width (768) and head size (64), two layers (one sliding, one full attention).
_T5_MODULE = {
    "hidden_size": 768,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "query_pre_attn_scalar": 64,
}
_TOKENIZER_VOCAB = 512
_SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>"]  # ids 0..3, Gemma's pad/eos/bos/unk ids

# Training text for the tiny tokenizer: prompt-like phrases, so typical prompts split into few tokens.
_TOKENIZER_TEXT = """
TrackType: Music, VocalType: Instrumental, Genre: Lofi Hip Hop, Instruments: dusty drums, warm Rhodes piano,
upright bass, vinyl crackle. A mellow late night loop at 84 BPM in D minor with lazy swing and soft tape hiss.
TrackType: Music, Genre: Deep House, Instruments: four on the floor kick, open hi hats, shuffled claps, sub bass,
filtered chord stabs, airy pads. Driving groove at 124 BPM, warm analog synth, long reverb tails, club mix.
TrackType: Music, Genre: Drum and Bass, Instruments: amen break, reese bass, chopped vocals, atmospheric strings.
Energetic rolling beat at 174 BPM with crisp snares, heavy low end and bright cymbals.
TrackType: Music, Genre: Ambient, Instruments: evolving drones, granular textures, glassy bells, distant choir.
Slow cinematic soundscape with gentle swells, wide stereo field and shimmering delays, no drums.
TrackType: Music, Genre: Trap, Instruments: booming 808, rapid hi hat rolls, dark piano, orchestral hits.
Hard hitting beat at 140 BPM in F sharp minor, menacing mood, punchy kick, layered snare with reverb.
TrackType: Music, Genre: Jazz, Instruments: brushed drums, walking double bass, muted trumpet, tenor saxophone.
Smoky club trio playing a relaxed ballad, intimate room sound, expressive solo, soft dynamics.
TrackType: Music, Genre: Rock, Instruments: distorted electric guitar, driving bass guitar, live drum kit.
Loud anthemic chorus riff at 120 BPM in E major, power chords, crash cymbals, big room ambience.
TrackType: Music, Genre: Techno, Instruments: pounding kick, rumbling bass, metallic percussion, acid synth line.
Hypnotic warehouse groove at 132 BPM, resonant filter sweeps, industrial noise, minimal and dark.
TrackType: Instrument, Instruments: solo acoustic guitar, fingerpicked arpeggios, nylon strings, gentle strumming.
TrackType: Instrument, Instruments: grand piano, soft sustain pedal, slow melancholic chords, felt hammers.
TrackType: Instrument, Instruments: string quartet, violin melody, viola, cello pizzicato, legato phrases.
TrackType: SFX, rain on a tin roof, distant thunder, wind through trees, birds chirping at dawn, ocean waves.
TrackType: SFX, footsteps on gravel, door creak, glass breaking, crowd applause, city traffic, car engine start.
TrackType: SFX, laser zap, sci-fi whoosh, robot beeps, spaceship hum, explosion with debris, riser and impact.
One shot: punchy kick drum, snappy snare, closed hat, shaker, tambourine, cowbell, clap, rim shot, tom fill.
Loop, stem, bridge, intro, outro, verse, drop, build up, breakdown, fade in, fade out, dry, wet, lo-fi, hi-fi.
Major, minor, dorian, phrygian, C, D, E, F, G, A, B, flat, sharp, slow, fast, happy, sad, dark, bright, calm.
"""


def tiny_config(objective: str = "rf_denoiser") -> dict:
    """The tiny model's ``model_config.json`` dict (a fresh copy)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: expected one of {OBJECTIVES}, got {objective!r}")
    config = copy.deepcopy(TINY_CONFIG)
    config["model"]["diffusion"]["diffusion_objective"] = objective
    return config


def write_tiny_model(folder: str | os.PathLike, *, seed: int = 0, objective: str = "rf_denoiser") -> Path:
    """Write a tiny random model into ``folder`` (which must not exist or be empty); returns ``folder``.

    The files are built in a temporary sibling folder that is renamed into place, so ``folder`` is either
    absent or complete. The same seed gives the same files.
    """
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} already exists and is not empty")
    config = tiny_config(objective)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the model folder is ordinary data
        (staging / CONFIG_FILENAME).write_text(json.dumps(config, indent=1) + "\n")
        _write_weights(staging / WEIGHTS_FILENAME, config, seed)
        write_tiny_text_encoder(staging / TEXT_ENCODER_SUBFOLDER, seed=seed)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def build_tiny_model(folder: Path) -> Path:
    """``folder`` holding the tiny model, built there on first use (concurrent builders: the first rename wins)."""
    if not folder.is_dir():
        try:
            write_tiny_model(folder)
        except OSError:
            if not folder.is_dir():  # not a lost race with another builder
                raise
    return folder


def _write_weights(path: Path, config: dict, seed: int) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SA3Model.from_config(config)
    state = {key: tensor.detach().contiguous() for key, tensor in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})


def write_tiny_text_encoder(folder: str | os.PathLike, *, seed: int = 0) -> Path:
    """A random T5Gemma encoder (encoder-decoder config, encoder weights) and its tokenizer, in a new folder."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    vocab_size = _write_tokenizer(folder)
    module = {**_T5_MODULE, "vocab_size": vocab_size}
    # Like the released file, the config describes the encoder-decoder; the loader switches it to encoder-only.
    config = T5GemmaConfig(encoder=module, decoder=module, vocab_size=vocab_size)
    config.save_pretrained(folder)
    config.is_encoder_decoder = False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = T5GemmaEncoderModel(config)
    state = {key: tensor.detach().contiguous() for key, tensor in encoder.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def _write_tokenizer(folder: Path) -> int:
    """A byte-level BPE tokenizer (no unknown tokens, no added BOS/EOS); returns its vocabulary size."""
    tokenizer = Tokenizer(BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_TOKENIZER_VOCAB,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_TOKENIZER_TEXT.strip().splitlines(), trainer=trainer)
    tokenizer.save(str(folder / "tokenizer.json"))
    pad, eos, bos, unk = _SPECIAL_TOKENS
    settings = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "pad_token": pad,
        "eos_token": eos,
        "bos_token": bos,
        "unk_token": unk,
        "padding_side": "right",
        "model_max_length": 8192,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=1) + "\n")
    return tokenizer.get_vocab_size()
