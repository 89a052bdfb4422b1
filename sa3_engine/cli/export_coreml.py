"""``sa3 export-coreml MODEL``: convert a model's DiT to a CoreML package (converts anywhere, runs on macOS)."""

from __future__ import annotations

import argparse
import json
import sys

from sa3_engine.export.coreml import export_dit
from sa3_engine.runtime.coreml import DEPLOYMENT_TARGET, MANIFEST_NAME, PRECISIONS, CoreMLError


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("model", help="model id (see `sa3 models`) or model folder")
    parser.add_argument("--models-dir", help="folder holding <id>/model_config.json (also $SA3_MODELS_DIR)")
    parser.add_argument("--max-frames", type=int,
                        help="longest latent length the export accepts (default: the model's longest window)")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16",
                        help="fp16 (default; Apple GPU / Neural Engine) or fp32")


def run(args: argparse.Namespace) -> int:
    from sa3_engine.models.checkpoint import CheckpointError
    from sa3_engine.models.sa3 import SA3Model
    from sa3_engine.weights.registry import resolve

    try:
        resolved = resolve(args.model, args.models_dir)
        model = SA3Model.from_pretrained(resolved.weights, config=resolved.config)
        package = export_dit(resolved.folder, model, model_id=resolved.id, max_frames=args.max_frames,
                             precision=args.precision)
    except (ValueError, OSError, CheckpointError, CoreMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    manifest = json.loads((package.parent / MANIFEST_NAME).read_text())
    print(package)
    print(f"  {manifest['precision']}, latent frames {manifest['frames'][0]}-{manifest['frames'][1]}, batch 1, "
          f"coremltools {manifest['coremltools']}; runs on macOS ({DEPLOYMENT_TARGET} or later)")
    return 0
