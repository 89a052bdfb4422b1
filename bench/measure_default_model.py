"""Measure the default model (``sa3-demo``): prompt adherence, editing, exact lengths and speed.

    PYTHONPATH=. .venv/bin/python bench/measure_default_model.py --model runs/adv/model \\
        [--base runs/dit/model] [--seeds 20] [--out docs/default-model] [--threads N]

MODEL and BASE are model ids or folders (``Pipeline.load``); each runs with its own defaults (post-trained:
ping-pong 8 without CFG; base: Euler 50 with CFG 7). Writes ``results.json``, ``results.md`` (a table
fragment for docs/default-model.md) and one spectrogram PNG per category plus inpaint and extend examples
into ``--out``. First the estimators are validated on synthetic clips with known truth (their accuracy is
part of the report), then every category is generated ``--seeds`` times per model and judged. Needs
librosa, scikit-learn and matplotlib (the ``bench`` and ``dev`` extras). Runs for minutes: one progress
line per generation batch. What each number means: the notes at the end of ``results.md``.
"""

from __future__ import annotations

import argparse
import sys
import time

from measures.measure import measure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the post-trained model: id or folder")
    parser.add_argument("--base", help="the base model (id or folder), measured side by side")
    parser.add_argument("--seeds", type=int, default=20, help="generations per category and per edit (default 20)")
    parser.add_argument("--out", default="docs/default-model", help="output folder (default docs/default-model)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--batch", type=int, default=4, help="prompts per pipeline call (default 4)")
    parser.add_argument("--validation-clips", type=int, default=60,
                        help="synthetic clips per category the estimators are checked on (default 60)")
    parser.add_argument("--classifier-clips", type=int, default=80,
                        help="synthetic clips per category the classifier is trained on (default 80)")
    parser.add_argument("--no-codec-reference", dest="codec_reference", action="store_false",
                        help="skip judging the prompts' own clips through each model's autoencoder")
    parser.add_argument("--no-pictures", dest="pictures", action="store_false", help="skip the spectrogram PNGs")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.batch < 1 or args.validation_clips < 4 or args.classifier_clips < 2:
        parser.error("--seeds and --batch must be at least 1, --validation-clips 4, --classifier-clips 2")
    started = time.perf_counter()

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {line}", flush=True)

    results = measure(args, log)
    for role, r in results["models"].items():
        failed = [k for k, c in r["criteria"].items() if c["pass"] is False]
        log(f"{role}: {'all criteria pass' if not failed else 'FAILED: ' + ', '.join(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
