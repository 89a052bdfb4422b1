"""``sa3 train STAGE``: the training recipe, one subcommand per stage (docs/training.md).

data (the synthetic clips) -> autoencoder -> encode -> dit -> distill -> adversarial, and lora on any result. Every training stage
takes ``--run DIR`` (checkpoint, log, the exported model in DIR/model unless ``--out``), ``--steps`` (the
total, so a resumed run stops at the same place), ``--resume`` and ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

FLOW_OPTIONS = {  # flag -> (settings field, help); the type is the default's
    "--batch-size": ("batch_size", "items per batch"),
    "--max-frames": ("max_frames", "crop length in latent frames (10.77 per second)"),
    "--lr": ("learning_rate", "AdamW learning rate"),
    "--cfg-dropout": ("cfg_dropout", "probability of dropping the cross-attention context"),
    "--silence-seconds": ("silence_seconds", "mean of the exponential silence extension"),
    "--pairing": ("pairing", "minibatch OT: sinkhorn, hungarian or none"),
    "--context-weight": ("context_weight", "weight of the loss on kept (context) frames"),
}
AUTOENCODER_OPTIONS = {
    "--batch-size": ("batch_size", "crops per batch"),
    "--crop-frames": ("crop_frames", "crop length in latent frames (x 4096 samples)"),
    "--lr": ("learning_rate", "AdamW learning rate"),
    "--stft-weight": ("stft_weight", "weight of the multi-resolution STFT loss"),
    "--stft-start": ("stft_start", "steps of waveform L1 alone before the STFT loss joins"),
    "--waveform-weight": ("waveform_weight", "weight of the waveform L1 term"),
    "--bottleneck-weight": ("bottleneck_weight", "weight of the soft-norm bottleneck penalty"),
    "--phase-weight": ("phase_weight", "weight of the IFGD phase term of the STFT loss"),
    "--adversarial-weight": ("adversarial_weight", "weight of the spectrogram adversary (0: off)"),
}
DISTILL_OPTIONS = {
    "--teacher-sampler": ("teacher_sampler", "dpmpp or euler"),
    "--teacher-steps": ("teacher_steps", "teacher sampler steps"),
    "--teacher-cfg": ("teacher_cfg", "teacher CFG scale"),
}
ADVERSARIAL_OPTIONS = {
    "--critic-lr": ("critic_learning_rate", "discriminator learning rate"),
    "--contrastive-weight": ("contrastive_weight", "weight of the discriminator's prompt-contrastive term"),
    "--mse-weight": ("mse_weight", "weight of the generator's MSE anchor to the real latents"),
}


def _options(parser: argparse.ArgumentParser, defaults, table: dict) -> None:
    for flag, (name, text) in table.items():
        value = getattr(defaults, name)
        parser.add_argument(flag, type=type(value), default=value, help=f"{text} (default %(default)s)")


def _settings(args: argparse.Namespace, defaults, *tables: dict):
    """``defaults`` with every option of ``tables`` taken from the command line."""
    values = {name: getattr(args, flag[2:].replace("-", "_")) for table in tables for flag, (name, _) in table.items()}
    return replace(defaults, **values, seed=args.seed)


def _common(parser: argparse.ArgumentParser, steps: int) -> None:
    parser.add_argument("--run", required=True, help="run folder: checkpoint.pt, log.jsonl, model/")
    parser.add_argument("--steps", type=int, default=steps, help=f"total training steps (default {steps})")
    parser.add_argument("--resume", action="store_true", help="continue the run folder's checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    parser.add_argument("--decay-steps", type=int, default=0,
                        help="lower the learning rate linearly to zero over the run's last N steps (default 0: constant)")
    parser.add_argument("--log-every", type=int, default=10, help="steps between progress lines")
    parser.add_argument("--out", help="where to write the result (default RUN/model)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is fastest on a busy shared CPU)")


def _flow(parser: argparse.ArgumentParser, defaults, *extra: dict) -> None:
    _options(parser, defaults, FLOW_OPTIONS)
    for table in extra:
        _options(parser, defaults, table)
    parser.add_argument("--mask-probs", default=",".join(map(str, defaults.mask_probs)),
                        help="inpainting mask probabilities full,segments,causal (default %(default)s)")
    parser.add_argument("--no-length-shift", action="store_true", help="no per-item timestep shift by length")


def _flow_settings(args: argparse.Namespace, defaults, *extra: dict):
    settings = _settings(args, defaults, FLOW_OPTIONS, *extra)
    probs = tuple(float(p) for p in args.mask_probs.split(","))
    return replace(settings, mask_probs=probs, length_shift=not args.no_length_shift)


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    from sa3_engine.training.adversarial_stage import AdversarialSettings
    from sa3_engine.training.autoencoder_stage import AutoencoderSettings
    from sa3_engine.training.distill_stage import DistillSettings
    from sa3_engine.training.flow_stage import FlowSettings
    from sa3_engine.training.lora_stage import LORA_SETTINGS

    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    data = stages.add_parser("data", help="write synthetic clips (WAV + JSON captions/facts) for training",
                             description="Write clips START .. START+COUNT-1 of the seeded synthetic dataset "
                                         "as NNNNNNNN.wav (float32, 44.1 kHz stereo) + NNNNNNNN.json. "
                                         "Existing clips are kept, so an interrupted run resumes.")
    data.add_argument("--out", required=True, help="output folder (created if missing)")
    data.add_argument("--count", type=int, required=True, help="how many clips to write")
    data.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    data.add_argument("--start", type=int, default=0, help="index of the first clip (default 0)")
    data.add_argument("--categories", default=None,
                      help="comma-separated subset of drums,bass,lead,pad,pluck,arp,sfx (default: all)")
    data.add_argument("--quiet", action="store_true", help="no progress line")

    ae = stages.add_parser("autoencoder", help="train a SAME autoencoder on a folder of audio")
    ae.add_argument("--config", required=True, help="model_config.json (full or autoencoder), 'small' or 'tiny'")
    ae.add_argument("--data", required=True, help="folder of audio files (+ captions, unused here)")
    ae.add_argument("--holdout", type=int, default=8, help="last N clips held out for SI-SDR / MR-STFT")
    _options(ae, AutoencoderSettings(), AUTOENCODER_OPTIONS)
    _common(ae, 2000)

    enc = stages.add_parser("encode", help="audio + captions -> latent dataset file, with a trained autoencoder")
    enc.add_argument("--autoencoder", required=True, help="autoencoder (or full model) folder")
    enc.add_argument("--data", required=True, help="folder of audio files with captions")
    enc.add_argument("--out", required=True, help="the latent dataset (.safetensors)")

    dit = stages.add_parser("dit", help="stage 1: rectified-flow DiT on pre-encoded latents")
    dit.add_argument("--config", required=True, help="full model_config.json (DiT and conditioner sizes), 'small' or 'tiny'")
    dit.add_argument("--autoencoder", required=True, help="the trained autoencoder folder")
    dit.add_argument("--text-encoder", default=None,
                     help="text encoder folder, required by a t5gemma conditioner (copied into the model)")
    dit.add_argument("--latents", required=True, help="latent dataset from `sa3 train encode`")
    _flow(dit, FlowSettings())
    _common(dit, 20000)

    dis = stages.add_parser("distill", help="stage 2: student from the stage-1 teacher's CFG trajectories")
    dis.add_argument("--teacher", required=True, help="the stage-1 model folder")
    dis.add_argument("--latents", required=True)
    _flow(dis, DistillSettings(), DISTILL_OPTIONS)
    _common(dis, 2000)

    adv = stages.add_parser("adversarial", help="stage 3: adversarial post-training -> rf_denoiser model")
    adv.add_argument("--student", required=True, help="the stage-2 model folder (the generator)")
    adv.add_argument("--base", required=True, help="the stage-1 model folder (initialises the discriminator)")
    adv.add_argument("--latents", required=True)
    _flow(adv, AdversarialSettings(), ADVERSARIAL_OPTIONS)
    _common(adv, 2000)

    lora = stages.add_parser("lora", help="LoRA fine-tuning -> an adapter file in the official format")
    lora.add_argument("--model", required=True, help="the model folder to adapt")
    source = lora.add_mutually_exclusive_group(required=True)
    source.add_argument("--latents", help="latent dataset encoded with this model's autoencoder")
    source.add_argument("--data", help="folder of audio + captions (encoded first, in memory)")
    lora.add_argument("--rank", type=int, default=16)
    lora.add_argument("--alpha", type=float, default=None, help="default: the rank")
    lora.add_argument("--include", nargs="*", default=None, help="layer name filters (substrings)")
    lora.add_argument("--exclude", nargs="*", default=None)
    _flow(lora, LORA_SETTINGS)
    _common(lora, 2000)


def _config(value: str) -> dict:
    """'tiny' (the built-in tiny config), a config shipped in sa3_engine/training/configs/ by name, or a path."""
    from sa3_engine.models.config import load_config

    if value == "tiny":
        from sa3_engine.weights.tiny import tiny_config

        return tiny_config("rectified_flow")
    shipped = Path(__file__).resolve().parents[1] / "training" / "configs" / f"{value}.json"
    return load_config(shipped if shipped.is_file() else value)


def _run(stage, args) -> int:
    from sa3_engine.training.runner import run

    out = run(stage, args.run, args.steps, resume=args.resume, checkpoint_every=args.checkpoint_every,
              log_every=args.log_every, out=args.out, decay_steps=args.decay_steps)
    print(out)
    return 0


def _progress(done: int, total: int) -> None:
    print(f"\rencoded {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)


def _run_data(args: argparse.Namespace) -> int:
    from sa3_engine.training.synth.dataset import write_dataset

    categories = [c.strip() for c in args.categories.split(",")] if args.categories else None
    began, seconds = time.perf_counter(), 0.0

    def progress(done: int, clip) -> None:
        nonlocal seconds
        seconds += clip.seconds
        if not args.quiet:
            rate = seconds / max(time.perf_counter() - began, 1e-9)
            print(f"\r{done + 1}/{args.count} clips, {seconds:.0f} s of audio, {rate:.0f}x real time",
                  end="", file=sys.stderr, flush=True)

    try:
        out = write_dataset(args.out, args.count, args.seed, start=args.start, categories=categories,
                            progress=progress)
    except ValueError as exc:
        print(f"sa3 train data: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(file=sys.stderr)
    print(f"wrote {out} (clips {args.start}..{args.start + args.count - 1}, seed {args.seed})")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.stage == "data":
        return _run_data(args)
    try:
        return _dispatch(args)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"sa3 train {args.stage}: {exc}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    import torch

    from sa3_engine.training.latents import LatentDataset

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)

    if args.stage == "autoencoder":
        from sa3_engine.training.autoencoder_stage import AutoencoderSettings, AutoencoderStage
        from sa3_engine.training.clips import list_clips, split_holdout

        train, holdout = split_holdout(list_clips(args.data), args.holdout)
        settings = _settings(args, AutoencoderSettings(), AUTOENCODER_OPTIONS)
        code = _run(AutoencoderStage(_config(args.config), train, holdout, settings), args)
        from sa3_engine.training.autoencoder_stage import METRICS_FILE

        print(json.dumps(json.loads((Path(args.out or Path(args.run) / "model") / METRICS_FILE).read_text())))
        return code
    if args.stage == "encode":
        from sa3_engine.models.sa3 import load_autoencoder
        from sa3_engine.training.encode import encode_folder

        print(encode_folder(load_autoencoder(args.autoencoder), args.data, args.out, _progress))
        return 0
    if args.stage == "lora":
        from sa3_engine.training.lora_stage import LORA_SETTINGS, lora_stage

        data = LatentDataset.load(args.latents) if args.latents else _encode_in_memory(args.model, args.data)
        stage = lora_stage(Path(args.model), data, _flow_settings(args, LORA_SETTINGS), args.rank, args.alpha,
                           args.include, args.exclude)
        args.out = args.out or str(Path(args.run) / "lora.safetensors")
        return _run(stage, args)
    data = LatentDataset.load(args.latents)
    if args.stage == "dit":
        from sa3_engine.training.flow_stage import FlowSettings, dit_stage

        text = Path(args.text_encoder) if args.text_encoder else None
        return _run(dit_stage(_config(args.config), Path(args.autoencoder), data, text,
                              _flow_settings(args, FlowSettings())), args)
    if args.stage == "distill":
        from sa3_engine.training.distill_stage import DistillSettings, distill_stage

        settings = _flow_settings(args, DistillSettings(), DISTILL_OPTIONS)
        return _run(distill_stage(Path(args.teacher), data, settings), args)
    from sa3_engine.training.adversarial_stage import AdversarialSettings, adversarial_stage

    settings = _flow_settings(args, AdversarialSettings(), ADVERSARIAL_OPTIONS)
    return _run(adversarial_stage(Path(args.student), Path(args.base), data, settings), args)


def _encode_in_memory(model: str, folder: str):
    from sa3_engine.models.sa3 import load_autoencoder
    from sa3_engine.training.clips import list_clips
    from sa3_engine.training.encode import encode_clips

    return encode_clips(load_autoencoder(model), list_clips(folder), _progress)
