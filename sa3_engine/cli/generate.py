"""``sa3 generate | inpaint | extend | variation | encode | decode``: generation and the codec from the shell.

Flags follow the official ``stable-audio`` CLI where it has them. Every result is a WAV plus a JSON
sidecar (model, prompt, seed, every parameter, timings). Nothing existing is overwritten unless
``--force``: the next free name (``out-1.wav``, ``out-2.wav``, ...) is used instead.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from bridge.protocol import SAMPLERS
from sa3_engine.audio import (
    BIT_DEPTHS,
    as_audio,
    atomic_path,
    prepare,
    read_audio,
    resample,
    splice,
    to_channels,
    unique_path,
    write_json,
    write_wav,
)
from sa3_engine.cli import options
from sa3_engine.runtime.device import COMPILE_HELP, PRECISION_HELP, PRECISIONS

# No trained default ships with the engine yet; ``sa3 generate`` without --model says what to pass.
DEFAULT_MODEL: str | None = None
GENERATION_COMMANDS = ("generate", "inpaint", "extend", "variation")
LATENTS_KEY = "latents"
LATENTS_SUFFIX = ".latents.safetensors"
SIDECAR = ".json"  # every WAV gets a JSON sidecar of the same name


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    if command != "generate":
        source = {"encode": "audio file to encode", "decode": "latents .safetensors written by `sa3 encode`"}
        parser.add_argument("input", type=Path, help=source.get(command, "source audio file"))
    parser.add_argument("--model", help="model id (see `sa3 models`) or model folder")
    parser.add_argument("--models-dir", help="folder holding <id>/model_config.json (also $SA3_MODELS_DIR)")
    parser.add_argument("--device", help="cuda, mps, cpu or coreml (default: the best available)")
    if command in ("encode", "decode"):
        parser.add_argument("--dtype", help="the autoencoder's dtype: float32 (default), float16 or bfloat16")
    else:
        parser.add_argument("--precision", choices=PRECISIONS, help=PRECISION_HELP)
        parser.add_argument("--compile", action="store_true", help=COMPILE_HELP)
        parser.add_argument("--dtype", help="the DiT's dtype: float32, float16 or bfloat16 (default: --precision's)")
        parser.add_argument("--autoencoder-dtype", help="the SAME autoencoder's dtype (default: --precision's)")
    parser.add_argument("-o", "--output", type=Path, help="output file (a batch adds _0, _1, ... to the name)")
    parser.add_argument("--force", action="store_true", help="overwrite existing files instead of picking a new name")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    if command != "encode":
        parser.add_argument("--format", choices=tuple(BIT_DEPTHS), default="24",
                            help="WAV sample format (default 24-bit)")
    if command in ("encode", "decode"):
        parser.add_argument("--no-chunked", dest="chunked", action="store_false",
                            help="process in one piece (default: chunks of 128 frames, bounded memory)")
        return
    parser.add_argument("-p", "--prompt", default="",
                        help='the prompt, ONE argument: quote it (-p "drum fill"). For several clips of it use '
                             "--batch-size; for another prompt run the command again")
    parser.add_argument("--negative-prompt", help="negative prompt, one argument (used with --cfg-scale > 1)")
    length = {"generate": "seconds to generate (default 10)", "extend": "total length of the result in seconds"}
    parser.add_argument("--duration", type=options.positive_float,
                        help=length.get(command, "seconds (default: the source's)"))
    if command == "extend":
        parser.add_argument("--add", type=options.positive_float,
                            help="seconds to add after the source (instead of --duration)")
    parser.add_argument("--steps", type=options.positive_int, help="sampler steps (default: 8 post-trained, 50 base)")
    parser.add_argument("--cfg-scale", type=options.cfg_scale,
                        help="guidance scale from 0 to 25 (default: 1 post-trained, 7 base)")
    parser.add_argument("--seed", type=int, default=-1, help="random seed, -1 for a random one (default)")
    parser.add_argument("--batch-size", type=options.positive_int, default=1,
                        help="how many clips of the prompt (seeds SEED, SEED+1, ...); files get _0, _1, ...")
    parser.add_argument("--sampler", choices=SAMPLERS, help="the sampler (default: the model's)")
    parser.add_argument("--sample-rate", type=options.sample_rate,
                        help="the output's sample rate in Hz (default: the input's; generate: the model's, 44100)")
    parser.add_argument("--lora", action="append", default=[], metavar="PATH[:STRENGTH]",
                        help="LoRA adapter file, strength 1 unless given; repeat to stack")
    if command == "variation":
        parser.add_argument("--init-noise-level", type=options.noise_level, default=0.9,
                            help="how much of the source is replaced by noise, in (0, 1] (default 0.9)")
    if command == "inpaint":
        parser.add_argument("--mask-start", type=options.seconds, action="append", required=True,
                            help="start of a region to regenerate, seconds; repeat for several regions")
        parser.add_argument("--mask-end", type=options.seconds, action="append", required=True,
                            help="end of a region to regenerate, seconds; one per --mask-start")
    if command in ("inpaint", "extend"):
        parser.add_argument("--no-splice", dest="splice", action="store_false",
                            help="keep the model's raw output instead of pasting the kept audio back")


def run(args: argparse.Namespace) -> int:
    """Bad input raises ValueError/OSError in the user's terms; ``sa3`` prints it as one line, exit 2."""
    model = args.model or DEFAULT_MODEL
    if model is None:
        raise ValueError("--model: no default model is bundled yet; pass --model tiny-random to try the stack, "
                         "or --model small-music once it is downloaded (`sa3 models` lists what is found)")
    options.resolve_model(model, args.models_dir)  # before any input is read or anything is written
    try:
        if args.command in GENERATION_COMMANDS:
            written = _generate(args, model)
        elif args.command == "encode":
            written = _encode(args, model)
        else:
            written = _decode(args, model)
    except ValueError as exc:  # the pipeline names its arguments; say the command's options instead
        raise ValueError(user_terms(str(exc))) from None
    for path in written:
        print(path)
    return 0


# pipeline argument -> what the command line calls it
OPTION_NAMES = {
    "mask_start": "--mask-start", "mask_end": "--mask-end", "duration": "--duration",
    "inpaint_audio": "the input", "init_audio": "the input", "init_noise_level": "--init-noise-level",
    "cfg_scale": "--cfg-scale", "steps": "--steps", "seed": "--seed", "prompt": "--prompt",
    "negative_prompt": "--negative-prompt", "batch_size": "--batch-size", "sampler": "--sampler", "loras": "--lora",
}


def user_terms(message: str) -> str:
    """A pipeline error with its argument names as the command's options (``mask_end[1]: ...`` ->
    ``--mask-end (region 2): ...``)."""
    match = re.match(r"^([a-z_]+)(?:\[(\d+)\])?(.*)$", message, re.S)
    if match and match[1] in OPTION_NAMES:
        which = "" if match[2] is None else f" ({'region' if 'mask' in match[1] else 'number'} {int(match[2]) + 1})"
        message = OPTION_NAMES[match[1]] + which + match[3]
    message = re.sub(r"\bduration=", "--duration ", message)
    for name, option in OPTION_NAMES.items():
        if "_" in name:
            message = re.sub(rf"\b{name}\b", option, message)
    return message


# --------------------------------------------------------------------------------------------- generation


def _parse_lora(text: str) -> tuple[str, float]:
    path, sep, strength = text.rpartition(":")
    if sep:
        try:
            return path, float(strength)
        except ValueError:
            pass  # a colon inside the path (C:\...), no strength
    return text, 1.0


def _read(path: Path):
    """(audio, rate) of an input file; an unreadable file is bad input, not a crash."""
    try:
        return read_audio(path)
    except (RuntimeError, ValueError) as exc:  # what pedalboard raises for data it cannot decode
        raise ValueError(f"input: cannot read {path}: {exc}") from None


def _generation_call(args) -> tuple[str, dict]:
    """The Pipeline method for the command and its keyword arguments. Reads the source file and checks the
    flags only the command line has, before any model is loaded."""
    kwargs = {
        "prompt": args.prompt,
        "negative_prompt": args.negative_prompt,
        "steps": args.steps,
        "cfg_scale": args.cfg_scale,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "sampler": args.sampler,
        "loras": [_parse_lora(text) for text in args.lora],
    }
    if args.command == "generate":
        return "generate", {**kwargs, "duration": 10.0 if args.duration is None else args.duration}
    audio, rate = _read(args.input)
    kwargs.update(audio=audio, sample_rate=rate)
    source = audio.shape[-1] / rate
    if args.command == "extend":
        if (args.duration is None) == (args.add is None):
            raise ValueError("--duration / --add: give exactly one (the total length, or the seconds to add)")
        total = args.duration if args.add is None else source + args.add
        if total <= source:
            raise ValueError(f"--duration: {total:g} s must be longer than the input ({source:g} s), "
                             "as it is the length of the result (or use --add)")
        return "extend", {**kwargs, "duration": total, "splice": args.splice}
    if args.duration is not None:  # else the source's length
        kwargs["duration"] = args.duration
    if args.command == "variation":
        return "variation", {**kwargs, "init_noise_level": args.init_noise_level}
    if len(args.mask_start) != len(args.mask_end):
        raise ValueError(f"--mask-end: {len(args.mask_end)} ends for {len(args.mask_start)} starts")
    from sa3_engine.generation.request import check_regions

    # the regions in the input's own seconds, checked before any model is loaded
    check_regions(args.mask_start, args.mask_end, audio.shape[-1], [kwargs.get("duration", source)], rate)
    return "inpaint", {**kwargs, "regions": list(zip(args.mask_start, args.mask_end, strict=True)), "splice": args.splice}


class _Bars:
    """One tqdm bar per pipeline stage, fed by the progress callback; a finished bar closes when the next
    stage starts, so a plain generation shows its stages one after the other."""

    def __init__(self, disable: bool):
        self.disable, self.bars = disable, {}

    def __call__(self, event: dict) -> None:
        from tqdm import tqdm

        for stage, other in list(self.bars.items()):
            if stage != event["stage"] and other.n >= other.total:
                other.close()
                del self.bars[stage]
        bar = self.bars.get(event["stage"])
        if bar is None:
            bar = self.bars[event["stage"]] = tqdm(total=event["n"], desc=event["stage"], unit="step",
                                                   disable=self.disable, file=sys.stderr)
        bar.update(event["i"] - bar.n)

    def __enter__(self) -> _Bars:
        return self

    def __exit__(self, *exc) -> None:
        for bar in self.bars.values():
            bar.close()


def _output_path(args, default: str, suffix: str) -> Path:
    """-o (or the default), with ``suffix`` added when it has none."""
    path = args.output or Path(default)
    if path.name.lower().endswith(suffix):
        return path
    if path.suffix:
        raise ValueError(f"--output: {path} must end in {suffix}")
    return path.with_name(path.name + suffix)


def _free_wav(path: Path, force: bool) -> Path:
    """``path``, or the first ``stem-N.wav`` whose WAV and JSON sidecar are both free (unless --force)."""
    return unique_path(path, force, sidecars=(SIDECAR,))


def _write_sidecar(path: Path, content: dict) -> Path:
    return write_json(path.with_suffix(SIDECAR), {**content, "created": datetime.now(UTC).isoformat()})


def _generate(args, model: str) -> list[Path]:
    from sa3_engine.generation.pipeline import Pipeline

    method, kwargs = _generation_call(args)
    default = "output.wav" if args.command == "generate" else f"{args.input.stem}-{args.command}.wav"
    base = _output_path(args, default, ".wav")
    pipe = Pipeline.load(model, models_dir=args.models_dir, device=args.device, dtype=args.dtype,
                         autoencoder_dtype=args.autoencoder_dtype, precision=args.precision,
                         compile=args.compile)
    with _Bars(args.quiet) as bars:
        generations = getattr(pipe, method)(**kwargs, callback=bars)
    rate = args.sample_rate or kwargs.get("sample_rate", pipe.sample_rate)
    written = []
    for i, gen in enumerate(generations):
        name = base if len(generations) == 1 else base.with_name(f"{base.stem}_{i}{base.suffix}")
        audio = _at_rate(gen, rate, method, kwargs)
        path = write_wav(_free_wav(name, args.force), audio, rate, bit_depth=args.format)
        _write_sidecar(path, {
            "command": args.command, "file": path.name, "format": args.format, "sample_rate": rate,
            "source": None if args.command == "generate" else str(args.input),
            "model": gen.params["model"], "prompt": gen.params["prompt"], "seed": gen.seed,
            "params": gen.params, "timings": gen.timings,
        })
        written.append(path)
    return written


def _at_rate(gen, rate: int, method: str, kwargs: dict):
    """A generation's audio at the output ``rate``. When that is the input's rate, the kept audio of an
    inpaint or extension is spliced back from the input itself, so it holds the input's exact samples."""
    from sa3_engine.generation.geometry import regions_to_samples
    from sa3_engine.generation.pipeline import SPLICE_FADE_SECONDS

    if rate == gen.sample_rate:
        return gen.audio
    audio = resample(gen.audio, gen.sample_rate, rate)
    if not gen.params.get("splice") or rate != kwargs.get("sample_rate"):
        return audio
    source = to_channels(as_audio(kwargs["audio"], "input"), audio.shape[0])
    regions = regions_to_samples(gen.params["mask_start"], gen.params["mask_end"], rate)
    return splice(source, audio, regions, round(SPLICE_FADE_SECONDS * rate))


# --------------------------------------------------------------------------------------------- codec


def _autoencoder(args, model: str):
    """The model's SAME autoencoder in ``--dtype`` (default float32, as the official AutoencoderModel), its
    resolution, its device."""
    from sa3_engine.models.sa3 import load_autoencoder
    from sa3_engine.runtime.device import DTYPES, pick_autoencoder_dtype, pick_device
    from sa3_engine.weights.registry import resolve

    dtype = DTYPES[pick_autoencoder_dtype(args.dtype, "--dtype")]  # checked before anything is loaded
    resolved = resolve(model, args.models_dir)
    device = pick_device(args.device)
    return resolved, load_autoencoder(resolved.weights, config=resolved.config, dtype=dtype, device=device), device


def _encode(args, model: str) -> list[Path]:
    import torch
    from safetensors.torch import save_file

    from sa3_engine.generation.codec import codec_encode

    audio, rate = _read(args.input)
    path = unique_path(_output_path(args, f"{args.input.stem}{LATENTS_SUFFIX}", LATENTS_SUFFIX), args.force,
                       suffix=LATENTS_SUFFIX)
    resolved, autoencoder, device = _autoencoder(args, model)
    x = prepare(audio, rate, autoencoder.sample_rate, autoencoder.io_channels, field="input")
    samples = x.shape[1]
    # pad to what the plain encoder covers, so chunked and plain encoding agree on the length
    padded = autoencoder.encoded_length(samples) * autoencoder.downsampling_ratio
    tensor = torch.nn.functional.pad(torch.from_numpy(x), (0, padded - samples))[None]
    with torch.no_grad():
        latents = codec_encode(autoencoder, tensor.to(device), args.chunked)[0]
    metadata = {"model": resolved.id, "sample_rate": str(autoencoder.sample_rate), "samples": str(samples),
                "downsampling_ratio": str(autoencoder.downsampling_ratio), "source": str(args.input)}
    with atomic_path(path) as tmp:
        save_file({LATENTS_KEY: latents.cpu().contiguous()}, str(tmp), metadata=metadata)
    return [path]


def _decode(args, model: str) -> list[Path]:
    import time

    import torch
    from safetensors import SafetensorError, safe_open

    from sa3_engine.generation.codec import codec_decode

    if not args.input.is_file():
        raise FileNotFoundError(f"latents file not found: {args.input}")
    try:
        with safe_open(str(args.input), framework="pt") as f:
            if LATENTS_KEY not in f.keys():
                raise ValueError(f"input: {args.input} holds no {LATENTS_KEY!r} tensor (write it with `sa3 encode`)")
            latents, metadata = f.get_tensor(LATENTS_KEY), f.metadata() or {}
    except SafetensorError as exc:
        raise ValueError(f"input: {args.input} is not a safetensors latents file: {exc}") from None
    if not torch.isfinite(latents).all():  # they would decode to a WAV of NaN samples
        raise ValueError(f"input: {args.input} holds NaN or infinite latents")
    if latents.dim() == 2:
        latents = latents[None]
    path = _free_wav(_output_path(args, f"{args.input.name.split('.')[0]}-decoded.wav", ".wav"), args.force)
    resolved, autoencoder, device = _autoencoder(args, model)
    started = time.perf_counter()
    with _Bars(args.quiet) as bars, torch.no_grad():
        def progress(done: int, total: int) -> None:
            bars({"stage": "decode", "i": done, "n": total})

        audio = codec_decode(autoencoder, latents.to(device), args.chunked, progress)[0]
    if "samples" in metadata:
        audio = audio[:, : int(metadata["samples"])]
    audio = audio.clamp(-1, 1).cpu().numpy()
    write_wav(path, audio, autoencoder.sample_rate, bit_depth=args.format)
    _write_sidecar(path, {"command": "decode", "file": path.name, "format": args.format, "source": str(args.input),
                          "model": resolved.id, "latents": metadata, "frames": int(latents.shape[-1]),
                          "timings": {"decode": time.perf_counter() - started}})
    return [path]
