"""The pass/fail criteria, ``results.md`` (a fragment for docs/default-model.md) and the spectrogram PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sa3_engine.training.synth.core import SAMPLE_RATE

TARGET = 0.8


def _get(results: dict, *path):
    for key in path:
        if not isinstance(results, dict) or results.get(key) is None:
            return None
        results = results[key]
    return results


def _pooled_key(per_category: dict, weights: dict) -> float | None:
    """Bass and lead pooled, each judged by its validated estimator (``judge``)."""
    hits = total = 0
    for category in ("bass", "lead"):
        key = per_category.get(category)
        if key is None:
            return None
        hits += key[key["judge"]]["exact"] * weights[category]
        total += weights[category]
    return hits / total if total else None


def _key_exact(r: dict) -> float | None:
    cats = r.get("categories", {})
    return _pooled_key({c: _get(cats, c, "key") for c in ("bass", "lead")},
                       {c: _get(cats, c, "count") or 0 for c in ("bass", "lead")})


def _classifier(r: dict) -> float | None:
    cats = r.get("categories", {})
    n = sum(c["count"] for c in cats.values())
    return sum(c["classifier"]["named"] * c["count"] for c in cats.values()) / n if n else None


def _lengths(r: dict) -> float | None:
    values = [c["exact_length"] for c in r.get("categories", {}).values()]
    values += [_get(r, "editing", mode, "exact_length") for mode in ("inpaint", "extend")]
    values = [v for v in values if v is not None]
    return min(values) if values else None


SEAM_MEASURES = {"seam_wrap": "wrap_seam", "seam_spectral": "spectral_seam"}
ALL = {c: 1 for c in ("bass", "lead")}

# (key, what, target, value(model results), reference(validation, model results), passes(value, reference)).
# The reference is the same judge on synthetic clips of the training distribution: what it reads off audio
# whose truth is known (for seams, the bar itself). A value of None is "not measured".
CRITERIA = (
    ("tempo", "drum loops: tempo within 3 % of the prompt (strict)", ">= 80 %",
     lambda r: _get(r, "categories", "drums", "tempo", "strict"),
     lambda v, r: _get(v, "tempo", "strict"), lambda x, ref: x >= TARGET),
    ("key", "bass + lead: estimated tonic = the prompt's", ">= 70 %", _key_exact,
     lambda v, r: _pooled_key(v["key"], ALL), lambda x, ref: x >= 0.7),
    ("tonal", "SFX: tonal / noisy as asked (target ours)", ">= 80 %",
     lambda r: _get(r, "categories", "sfx", "tonal", "as_asked"),
     lambda v, r: _get(v, "tonal", "accuracy"), lambda x, ref: x >= TARGET),
    ("classifier", "classifier names the prompted category", ">= 80 %", _classifier,
     lambda v, r: _get(v, "classifier", "accuracy"), lambda x, ref: x >= TARGET),
    ("inpaint_click", "inpaint boundaries without a click", "100 %",
     lambda r: _get(r, "editing", "inpaint", "no_click"), lambda v, r: None, lambda x, ref: x >= 1.0),
    ("inpaint_kept", "inpaint: audio outside the region bit-identical", "100 %",
     lambda r: _get(r, "editing", "inpaint", "kept_identical"), lambda v, r: None, lambda x, ref: x >= 1.0),
    ("extend_click", "continuation joins without a click", "100 %",
     lambda r: _get(r, "editing", "extend", "no_click"), lambda v, r: None, lambda x, ref: x >= 1.0),
    ("extend_tempo", "continuation keeps the source tempo (strict; target ours)", ">= 80 %",
     lambda r: _get(r, "editing", "extend", "tempo_strict"),
     lambda v, r: _get(r, "editing", "extend", "source_tempo_strict"), lambda x, ref: x >= TARGET),
    ("seam_wrap", "loops: wrap jump / typical step beside it (plugin_shell.dsp), median", "<= training loops'",
     lambda r: _get(r, "loops", "wrap_seam", "median"),
     lambda v, r: _get(v, "seams", "all", "wrap_seam", "median"), lambda x, ref: x <= ref),
    ("seam_spectral", "loops: spectral seam, median", "<= training loops'",
     lambda r: _get(r, "loops", "spectral_seam", "median"),
     lambda v, r: _get(v, "seams", "all", "spectral_seam", "median"), lambda x, ref: x <= ref),
    ("lengths", "exact output lengths (share of outputs)", "100 %", _lengths, lambda v, r: None,
     lambda x, ref: x >= 1.0),
)


def criteria(results: dict, validation: dict) -> dict:
    out = {}
    for key, what, target, read, reference, passes in CRITERIA:
        value, ref = read(results), reference(validation, results)
        out[key] = {"what": what, "target": target, "value": None if value is None else round(value, 4),
                    "synthetic_reference": None if ref is None else round(ref, 4),
                    "pass": None if value is None else bool(passes(value, ref))}
    return out


# ------------------------------------------------------------------------------------------- markdown


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.0f} %"


def _num(v, digits=2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _fmt(show, value) -> str:
    return "–" if value is None else show(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _paired(r: dict, key: str) -> str:
    pair = _get(r, "paired", key)
    return f" [{pair[0]}/{pair[1]}]" if pair else ""


def _category_cells(r: dict) -> list[str]:
    tempo, key, tonal, seams = _get(r, "tempo"), _get(r, "key"), _get(r, "tonal"), _get(r, "seams")
    judge = key[key["judge"]] if key else None
    return [str(r.get("silent", "")), _pct(r["exact_length"]), _pct(r["classifier"]["named"]),
            f"{_pct(tempo['strict'])} ({_pct(tempo['strict_or_octave'])}){_paired(r, 'tempo_strict')}" if tempo else "",
            f"{_pct(judge['exact'])} ({_pct(judge['exact_or_relative'])}){_paired(r, 'key_exact')}" if key else "",
            _pct(tonal["as_asked"]) if tonal else "",
            f"{_num(seams['wrap_seam']['median'])} / {_num(seams['spectral_seam']['median'])}" if seams else ""]


def markdown(results: dict) -> str:
    models = results["models"]
    names = list(models)
    heads = [f"{n}: `{models[n]['model']['model']}` ({models[n]['model']['sampler']} {models[n]['model']['steps']}, "
             f"CFG {models[n]['model']['cfg_scale']:g})" for n in names]
    v = results["validation"]
    lines = [f"Generated by `bench/measure_default_model.py` ({results['settings']['seeds']} seeds per category; "
             f"{results['settings']['runtime_seconds']:.0f} s).", "", "#### Criteria", ""]
    rows = []
    for key, what, target, *_ in CRITERIA:
        show = (lambda x: _num(x, 3)) if key in SEAM_MEASURES else _pct
        cells = []
        for n in names:
            c = models[n]["criteria"][key]
            verdict = "" if c["pass"] is None else " pass" if c["pass"] else " FAIL"
            cells.append(show(c["value"]) + verdict)
        refs = {_fmt(show, models[n]["criteria"][key]["synthetic_reference"]) for n in names}
        rows.append([what, target, " / ".join(sorted(refs)), *cells])
    lines += _table(["criterion", "target", "same judge on synthetic clips", *heads], rows)
    lines += ["", "#### Per category", ""]
    rows = []
    for cat in results["categories"]:
        sources = [("the prompts' own clips", results["prompt_clips"][cat])]
        for n in names:
            if "codec_reference" in models[n]:
                sources.append((f"{n}: own clips via its codec", models[n]["codec_reference"][cat]))
            sources.append((f"**{n}**", models[n]["categories"][cat]))
        for label, r in sources:
            rows.append([cat, label, *_category_cells(r)])
    lines += _table(["category", "audio", "silent", "exact length", "classifier", "tempo strict (with x2, x1/2) "
                     "[where judge right on own clip]", "key exact (with relative) [where judge right on own clip]",
                     "tonal as asked", "seam: wrap / spectral (median)"], rows)

    lines += ["", "#### Editing", ""]
    rows = []
    for mode in ("inpaint", "extend"):
        for n in names:
            e = models[n]["editing"][mode]
            rows.append([mode, n, e["count"], _pct(e["exact_length"]), _pct(e["kept_identical"]), _pct(e["no_click"]),
                         f"{_num(e['step_over_p999']['median'])} / {_num(e['step_over_p999']['max'])}",
                         f"{_pct(e['tempo_strict'])} ({_pct(e['tempo_strict_or_octave'])}; source "
                         f"{_pct(e['source_tempo_strict'])})" if "tempo_strict" in e else ""])
    lines += _table(["mode", "model", "cases", "exact length", "kept bit-identical", "no click",
                     "boundary step / source p99.9 (median / max)", "continuation tempo strict (with x2, x1/2)"],
                    rows)

    lines += ["", "#### Speed (10 s of audio, median of 3 after a warm-up)", ""]
    rows = [[n, f"{models[n]['speed']['sampler']} {models[n]['speed']['steps']}, CFG "
                f"{models[n]['speed']['cfg_scale']:g}", models[n]["speed"]["threads"],
             f"{models[n]['speed']['median_seconds']:.2f} s", f"{models[n]['speed']['realtime_factor']:.1f}x"]
            for n in names]
    lines += _table(["model", "sampler", "threads", "wall time", "faster than real time"], rows)

    t, k = v["tempo"], v["key"]
    lines += ["", "#### The estimators on synthetic ground truth (clips never trained on)", ""]
    meters = ", ".join(f"{m} {c['strict']}/{sum(c.values())}" for m, c in t["per_meter"].items())
    rows = [["tempo (librosa onset autocorrelation, loops tiled to 16 s)", "drums",
             f"{_pct(t['strict'])} strict ({meters}), {_pct(t['strict_or_octave'])} with x2/x1/2"]]
    for cat in ("bass", "lead"):
        for est in ("chroma_kk", "f0_kk"):
            mark = " (judge)" if k[cat]["judge"] == est else ""
            rows.append([f"key: {est}{mark}", cat, f"{_pct(k[cat][est]['exact'])} exact tonic, "
                         f"{_pct(k[cat][est]['exact_or_relative'])} with relative"])
    rows.append(["tonal/noisy: band flatness < " + f"{v['tonal']['threshold']:.4f}", "sfx",
                 f"{_pct(v['tonal']['accuracy'])} (fit set {_pct(v['tonal']['fit_accuracy'])})"])
    rows.append(["category classifier (log-mel statistics, gradient-boosted trees)", "all",
                 f"{_pct(v['classifier']['accuracy'])} held out"])
    lines += _table(["estimator", "clips", "accuracy"], rows)
    lines += ["", *[f"- {note}" for note in results["notes"]], ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- pictures


def _mel_power(audio: np.ndarray) -> np.ndarray:
    import librosa

    y = np.asarray(audio, dtype=np.float32).mean(axis=0)
    return librosa.feature.melspectrogram(y=y, sr=SAMPLE_RATE, n_fft=2048, hop_length=512, n_mels=96, fmax=16000)


def spectrograms(path: Path, title: str, panels: list[tuple[str, np.ndarray]],
                 lines: list[list[float]] | None = None) -> Path:
    """One row per panel (label, audio): log-mel spectrograms (dB under the loudest bin of all panels, 80 dB
    shown) on a shared time axis in seconds; ``lines``
    per panel marks boundaries (seconds) with dashed white lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    longest = max(a.shape[1] for _, a in panels) / SAMPLE_RATE
    mels = [_mel_power(a) for _, a in panels]
    top = max(float(m.max()) for m in mels) + 1e-12  # one reference for all panels: levels compare
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 1.9 * len(panels) + 0.5), squeeze=False)
    for i, (label, audio) in enumerate(panels):
        ax = axes[i, 0]
        seconds = audio.shape[1] / SAMPLE_RATE
        db = 10 * np.log10(np.maximum(mels[i], top * 1e-9) / top)
        ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=0,
                  extent=(0, seconds, 0, 96))
        ax.set_xlim(0, longest)
        ax.set_yticks([])
        ax.set_ylabel("mel", fontsize=8)
        ax.set_title(label, fontsize=9, loc="left")
        for x in (lines[i] if lines else []):
            ax.axvline(x, color="white", linestyle="--", linewidth=1)
    axes[-1, 0].set_xlabel("seconds")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
