"""The estimators applied to synthetic ground truth (how far each can be trusted) and to a model's output.

``validate`` runs first and returns a ``Judges``: the fitted classifier, the flatness threshold, the key
estimator per category and the training loops' seam measures, all fixed before any generation is seen.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from plugin_shell.dsp import seam_discontinuity
from sa3_engine.training.synth.core import SAMPLE_RATE
from sa3_engine.training.synth.dataset import CATEGORIES

from . import data, signal
from .classifier import CategoryClassifier

SR = SAMPLE_RATE


def rate(flags) -> float | None:
    flags = list(flags)
    return round(float(np.mean(flags)), 4) if flags else None


def counts(verdicts, names) -> dict:
    c = Counter(verdicts)
    return {name: c.get(name, 0) for name in names}


def quantiles(values) -> dict:
    v = np.asarray(list(values), dtype=np.float64)
    if not len(v):
        return {}
    return {"median": round(float(np.median(v)), 4), "p90": round(float(np.percentile(v, 90)), 4),
            "max": round(float(v.max()), 4)}


@dataclass
class Judges:
    classifier: CategoryClassifier
    flatness_threshold: float
    key_estimator: dict[str, str]  # category -> "chroma_kk" | "f0_kk"
    seams: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # category -> measure -> values


def tempo_report(estimates: list[float], bpms: list[float], meters: list[str]) -> dict:
    verdicts = [signal.tempo_verdict(e, b) for e, b in zip(estimates, bpms, strict=True)]
    per_meter = {m: counts([v for v, mm in zip(verdicts, meters, strict=True) if mm == m], signal.TEMPO_VERDICTS)
                 for m in sorted(set(meters))}
    return {"strict": rate(v == "strict" for v in verdicts),
            "strict_or_octave": rate(v in ("strict", "octave") for v in verdicts),
            "verdicts": counts(verdicts, signal.TEMPO_VERDICTS), "per_meter": per_meter,
            "items": [{"bpm": b, "meter": m, "estimate": round(e, 1), "verdict": v}
                      for e, b, m, v in zip(estimates, bpms, meters, verdicts, strict=True)]}


def key_report(audios, truths, category: str) -> dict:
    out = {}
    for estimator in signal.KEY_ESTIMATORS:
        keys = [signal.estimate_key(a, SR, estimator, category) for a in audios]
        verdicts = [signal.key_verdict(t, m, truth["key"]) for (t, m), truth in zip(keys, truths, strict=True)]
        out[estimator] = {"exact": rate(v == "exact" for v in verdicts),
                          "exact_or_relative": rate(v in ("exact", "relative") for v in verdicts),
                          "verdicts": counts(verdicts, signal.KEY_VERDICTS), "per_item": verdicts}
    return out


def seam_measures(audios) -> dict[str, list[float]]:
    return {"wrap_seam": [seam_discontinuity(a) for a in audios],
            "spectral_seam": [signal.spectral_seam(a) for a in audios]}


def validate(count: int, classifier_count: int, log) -> tuple[dict, Judges]:
    """Each estimator on ``count`` synthetic clips per category whose truth is known (``data.VALIDATION``);
    the flatness threshold and the classifier are fitted on other clips (``data.CLASSIFIER``)."""
    report: dict = {"clips_per_category": count, "seeds": "data.VALIDATION (fitting: data.CLASSIFIER)"}
    validation = {c: data.clips(data.VALIDATION, c, count, balance_tonal=c == "sfx") for c in CATEGORIES}
    log(f"validation: {count} synthetic clips per category made")

    drums = validation["drums"]
    report["tempo"] = tempo_report([signal.tempo_bpm(c.audio, SR, loop=True) for c in drums],
                                   [c.meta["bpm"] for c in drums], [c.meta["meter"] for c in drums])
    log(f"validation: tempo strict {report['tempo']['strict']:.0%} on synthetic drum loops")

    report["key"], choice = {}, {}
    for category in data.KEY_CATEGORIES:
        clips = validation[category]
        report["key"][category] = key_report([c.audio for c in clips], [c.meta for c in clips], category)
        # the judge of a category: the estimator more often exact on its synthetic truth (ties: chroma)
        choice[category] = max(signal.KEY_ESTIMATORS, key=lambda e, r=report["key"][category]: (
            r[e]["exact"], e == "chroma_kk"))
        report["key"][category]["judge"] = choice[category]
    log("validation: key exact " + ", ".join(
        f"{c} {report['key'][c][choice[c]]['exact']:.0%} ({choice[c]})" for c in data.KEY_CATEGORIES))

    fit = data.clips(data.CLASSIFIER, "sfx", count, balance_tonal=True)
    fit_values = [signal.band_flatness(c.audio, SR) for c in fit]
    threshold = signal.choose_threshold(np.array(fit_values), np.array([c.meta["tonal"] for c in fit]))
    values = [signal.band_flatness(c.audio, SR) for c in validation["sfx"]]
    tonal = [c.meta["tonal"] for c in validation["sfx"]]
    report["tonal"] = {
        "threshold": round(threshold, 5),
        "fit_accuracy": rate((v < threshold) == c.meta["tonal"] for v, c in zip(fit_values, fit, strict=True)),
        "accuracy": rate((v < threshold) == t for v, t in zip(values, tonal, strict=True)),
    }
    log(f"validation: tonal/noisy threshold {threshold:.4f}, accuracy {report['tonal']['accuracy']:.0%}")

    train = [(c.audio, cat) for cat in CATEGORIES for c in data.clips(data.CLASSIFIER, cat, classifier_count)]
    classifier = CategoryClassifier(SR).fit([a for a, _ in train], [label for _, label in train])
    predicted = {c: classifier.predict([clip.audio for clip in validation[c]]) for c in CATEGORIES}
    report["classifier"] = {
        "training_clips_per_category": classifier_count,
        "accuracy": rate(p == c for c in CATEGORIES for p in predicted[c]),
        "per_category": {c: rate(p == c for p in predicted[c]) for c in CATEGORIES},
        "confusion": {c: dict(Counter(predicted[c])) for c in CATEGORIES},
    }
    log(f"validation: classifier accuracy {report['classifier']['accuracy']:.0%} on held-out synthetic clips")

    seams = {c: seam_measures([clip.audio for clip in validation[c]]) for c in data.LOOP_CATEGORIES}
    report["seams"] = {c: {m: quantiles(v) for m, v in s.items()} for c, s in seams.items()}
    report["seams"]["all"] = {m: quantiles(v for s in seams.values() for v in s[m]) for m in ("wrap_seam",
                                                                                              "spectral_seam")}
    return report, Judges(classifier, threshold, choice, seams)


def judge_generations(judges: Judges, category: str, prompts, audios) -> dict:
    """Every check that applies to ``category`` on one model's generations of ``prompts``."""
    truths = [p.truth for p in prompts]
    out: dict = {"count": len(audios),
                 "exact_length": rate(a.shape[1] == p.samples for a, p in zip(audios, prompts, strict=True)),
                 "silent": sum(signal.is_silent(a) for a in audios)}
    predicted = judges.classifier.predict(audios)
    out["classifier"] = {"named": rate(p == category for p in predicted), "predicted": dict(Counter(predicted))}
    if category == "drums":
        out["tempo"] = tempo_report([signal.tempo_bpm(a, SR, loop=True) for a in audios],
                                    [t["bpm"] for t in truths], [t["meter"] for t in truths])
    if category in data.KEY_CATEGORIES:
        out["key"] = key_report(audios, truths, category)
        out["key"]["judge"] = judges.key_estimator[category]
    if category == "sfx":
        values = [signal.band_flatness(a, SR) for a in audios]
        out["tonal"] = {"as_asked": rate((v < judges.flatness_threshold) == t["tonal"]
                                         for v, t in zip(values, truths, strict=True)),
                        "tonal_prompts": sum(bool(t["tonal"]) for t in truths),
                        "flatness": [round(v, 4) for v in values]}
    if category in data.LOOP_CATEGORIES:
        out["seams"] = {m: quantiles(v) for m, v in seam_measures(audios).items()}
        out["seams_raw"] = seam_measures(audios)
    return out


def paired(result: dict, reference: dict) -> dict:
    """Tempo and key of generations counted only where the judge is right on the prompt's own synthetic clip
    (``reference``: the same checks on those clips), so the judge's own misses do not count against the
    model: (hits, prompts counted)."""
    out = {}
    if "tempo" in result:
        pairs = [(g["verdict"], r["verdict"]) for g, r in zip(result["tempo"]["items"], reference["tempo"]["items"],
                                                             strict=True) if r["verdict"] == "strict"]
        out["tempo_strict"] = [sum(g == "strict" for g, _ in pairs), len(pairs)]
    if "key" in result:
        judge_name = result["key"]["judge"]
        pairs = [(g, r) for g, r in zip(result["key"][judge_name]["per_item"],
                                        reference["key"][judge_name]["per_item"], strict=True) if r == "exact"]
        out["key_exact"] = [sum(g == "exact" for g, _ in pairs), len(pairs)]
    return out


CLICK_SLACK = 1.01


def judge_edit(case: dict, source: np.ndarray, *, bpm: float | None = None) -> dict:
    """An inpaint or extension of a loop ``source``: exact length, kept audio bit-identical, the step at each
    boundary, and (given ``bpm``) the tempo of what was generated after the join.

    No click: the step at a boundary is no larger than the source's 99.9th-percentile step, or than the
    step the source itself makes at that sample (a region starting on a bar line may start on a drum hit:
    reproducing the source's own onset is no click). Past the source's end, the source's own step there
    is the one the loop makes as it repeats, |x[0] - x[-1]|. ``CLICK_SLACK`` (1 %) absorbs the splice's
    first crossfade sample, which is the source's times cos(~0) plus a trace of the new audio.
    """
    audio = case["audio"]
    scale = signal.step_scale(source)
    out = {"exact_length": audio.shape[1] == case["expected_samples"],
           "kept_identical": all(np.array_equal(audio[:, a:b], source[:, a:b]) for a, b in case["kept"]),
           "source_steps": {k: round(v, 5) for k, v in scale.items()}, "boundaries": []}
    for b in case["boundaries"]:
        step = signal.boundary_step(audio, b)
        own = (signal.boundary_step(source, b) if b < source.shape[1]
               else float(np.abs(source[:, 0].astype(np.float64) - source[:, -1]).max()))
        out["boundaries"].append({"sample": b, "step": round(step, 5), "source_step_here": round(own, 5),
                                  "over_p99": round(step / max(scale["p99"], 1e-12), 3),
                                  "over_p999": round(step / max(scale["p999"], 1e-12), 3),
                                  "no_click": step <= CLICK_SLACK * max(scale["p999"], own)})
    if bpm is not None:
        join = case["boundaries"][0]
        estimate = signal.tempo_bpm(audio[:, join:], SR, loop=False)
        own = signal.tempo_bpm(source, SR, loop=False)  # the same estimator on the source: its ceiling here
        out["tempo"] = {"bpm": bpm, "estimate": round(estimate, 1), "verdict": signal.tempo_verdict(estimate, bpm),
                        "source_estimate": round(own, 1), "source_verdict": signal.tempo_verdict(own, bpm)}
    return out


def summarize_edits(cases: list[dict]) -> dict:
    boundaries = [b for c in cases for b in c["boundaries"]]
    out = {"count": len(cases), "exact_length": rate(c["exact_length"] for c in cases),
           "kept_identical": rate(c["kept_identical"] for c in cases),
           "no_click": rate(b["no_click"] for b in boundaries),
           "step_over_p999": quantiles(b["over_p999"] for b in boundaries)}
    tempos = [c["tempo"]["verdict"] for c in cases if "tempo" in c]
    if tempos:
        out["tempo_strict"] = rate(v == "strict" for v in tempos)
        out["tempo_strict_or_octave"] = rate(v in ("strict", "octave") for v in tempos)
        out["tempo_verdicts"] = counts(tempos, signal.TEMPO_VERDICTS)
        out["source_tempo_strict"] = rate(c["tempo"]["source_verdict"] == "strict" for c in cases if "tempo" in c)
    return out
