"""The ``sa3`` command: a table of subcommands, each implemented by its own module.

Every module named here exposes ``add_arguments(parser, command)`` and ``run(args) -> int``;
modules are imported only when their command runs, so ``sa3 --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("sa3_engine.cli.generate", "text to audio"),
    "inpaint": ("sa3_engine.cli.generate", "regenerate time ranges of an audio file"),
    "extend": ("sa3_engine.cli.generate", "continue an audio file"),
    "variation": ("sa3_engine.cli.generate", "audio-to-audio variation of a file"),
    "encode": ("sa3_engine.cli.generate", "audio file -> SAME latents (.safetensors)"),
    "decode": ("sa3_engine.cli.generate", "SAME latents -> audio file"),
    "export-coreml": ("sa3_engine.cli.export_coreml", "convert a model's DiT to CoreML (runs on macOS; converts anywhere)"),
    "models": ("sa3_engine.cli.models", "list the models found locally and what is missing"),
    "parity": ("sa3_engine.cli.parity", "check official parity vectors"),
    "serve": ("sa3_engine.cli.serve", "run the persistent engine"),
    "engine": ("sa3_engine.cli.engine", "talk to a running engine (status); pair clients on other machines (keys, pair, connect)"),
    "render": ("sa3_engine.cli.render", "build and render an arrangement from a song file"),
    "presets": ("sa3_engine.cli.presets", "list DAW presets, prompt templates and render chains"),
    "host": ("sa3_engine.cli.host", "the JSON host bridge DAW scripts call: sa3 host REQUEST.json"),
    "ardour": ("sa3_engine.cli.ardour", "install the SA3 editor actions into Ardour"),
    "demo": ("sa3_engine.cli.demo", "the main job: generate a loop and place it through the whole stack"),
    "train": ("sa3_engine.cli.train", "train a model: data, autoencoder, encode, dit, distill, adversarial, lora"),
}


class Parser(argparse.ArgumentParser):
    """Bad arguments are one line naming the option (no usage dump), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def fail(command: str, exc: BaseException) -> int:
    """Report bad input as ``sa3 COMMAND: error: ...`` (no traceback); returns the exit status, 2."""
    print(f"sa3 {command}: error: {exc}", file=sys.stderr)
    return 2


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = Parser(prog="sa3", description="Stable Audio 3 for the DAW")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(_module=module)
        if name == command:  # only the chosen command's module is imported
            importlib.import_module(module).add_arguments(p, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args, extra = parser.parse_known_args(argv)
    if extra:
        hint = ' (-p takes ONE prompt: quote one of several words, -p "drum fill")' if "-p" in argv else ""
        parser.exit(2, f"sa3 {args.command}: error: unrecognized arguments: {' '.join(extra)}{hint}\n")
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except (ValueError, OSError) as exc:  # bad input or files: a sentence, not a traceback
        return fail(args.command, exc)


if __name__ == "__main__":
    sys.exit(main())
