"""Captions in Stable Audio 3's prompt style, with paraphrases.

The released models were trained on AudioSparx-style prompts ("TrackType: Music, VocalType: Instrumental,
Genre: ..., Instruments: ...", "TrackType: SFX, ..."). Each clip gets several captions for the same facts:
tagged forms with shuffled tag order, plain comma lists and short sentences, with synonyms, so a model
learns the facts rather than one fixed template. The facts themselves are always spelled the same way
(the BPM number, "C# minor", the instrument name), so an evaluation can look for them.
"""

from __future__ import annotations

import numpy as np

CATEGORY_NOUNS = {
    "drums": ("drum loop", "beat", "drum groove", "percussion loop"),
    "bass": ("bass line", "bass loop", "bassline", "bass riff"),
    "lead": ("lead melody", "melody loop", "synth lead line", "lead riff"),
    "pad": ("chord progression", "pad loop", "chords", "harmonic bed"),
    "pluck": ("pluck loop", "plucked pattern", "plucks", "pluck melody"),
    "arp": ("arpeggio", "arp loop", "arpeggiated sequence", "arp pattern"),
    "sfx": ("sound effect", "sfx", "sound", "effect"),
}
SFX_NOUNS = {
    "riser": ("riser", "build-up riser", "tension riser"),
    "impact": ("impact", "hit", "cinematic impact"),
    "whoosh": ("whoosh", "swoosh", "fly-by whoosh"),
    "ui beep": ("UI beep", "interface beep", "notification beep"),
    "ui click": ("UI click", "interface click", "button click"),
    "ambience": ("ambience", "background ambience", "atmosphere"),
}
MAJOR_LIKE = ("major", "mixolydian", "major pentatonic")


def moods(meta: dict) -> list[str]:
    """Mood words that follow from the facts: tempo for energy, scale for colour."""
    words = []
    bpm = meta.get("bpm")
    if bpm is not None:
        words.append("energetic" if bpm >= 135 else "laid-back" if bpm < 95 else "groovy")
    scale = meta.get("scale")
    if scale is not None:
        words.append("uplifting" if scale in MAJOR_LIKE else "dark" if scale == "phrygian" else "melancholic")
    return words


def _bpm(rng: np.random.Generator, bpm: float) -> str:
    form = int(rng.integers(3))
    return (f"{bpm:g} BPM", f"{bpm:g} bpm", f"BPM: {bpm:g}")[form]


def _key(rng: np.random.Generator, name: str) -> str:
    form = int(rng.integers(3))
    return (f"Key: {name}", f"in {name}", f"{name} key")[form]


def _music_parts(meta: dict, category: str, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """(facts, flavour): facts always appear, flavour words are sampled."""
    noun = str(rng.choice(CATEGORY_NOUNS[category]))
    facts = [noun, meta["instrument"], _bpm(rng, meta["bpm"])]
    if "key_name" in meta:
        facts.append(_key(rng, meta["key_name"]))
    if meta.get("meter") not in (None, "4/4") or rng.random() < 0.3:
        facts.append(f"{meta['meter']} time" if rng.random() < 0.5 else f"Meter: {meta['meter']}")
    flavour = moods(meta) + list(meta.get("effects", []))
    flavour = [w for w in flavour if rng.random() < 0.7]
    return facts, flavour


def _tagged(meta: dict, category: str, rng: np.random.Generator) -> str:
    if category == "sfx":
        noun = str(rng.choice(SFX_NOUNS[meta["subtype"]]))
        tags = [f"Instruments: {meta['instrument']}", noun, meta["mood"], meta["motion"]] + list(meta["effects"])
        order = rng.permutation(len(tags) - 1) + 1
        return "TrackType: SFX, " + ", ".join([tags[0]] + [tags[i] for i in order])
    facts, flavour = _music_parts(meta, category, rng)
    tags = [f"Genre: {meta['genre'].title()}", f"Instruments: {facts[1]}", facts[0], *facts[2:], *flavour]
    tags = [tags[i] for i in rng.permutation(len(tags))]
    return "TrackType: Music, VocalType: Instrumental, " + ", ".join(tags)


def _plain(meta: dict, category: str, rng: np.random.Generator) -> str:
    if category == "sfx":
        noun = str(rng.choice(SFX_NOUNS[meta["subtype"]]))
        words = [noun, meta["instrument"], meta["mood"], meta["motion"], *meta["effects"]]
        return ", ".join(words[:2] + [words[i] for i in rng.permutation(len(words) - 2) + 2])
    facts, flavour = _music_parts(meta, category, rng)
    words = [meta["genre"], *facts, *flavour]
    return ", ".join(words[i] for i in rng.permutation(len(words)))


def _sentence(meta: dict, category: str, rng: np.random.Generator) -> str:
    if category == "sfx":
        noun = str(rng.choice(SFX_NOUNS[meta["subtype"]]))
        fx = f", {' and '.join(meta['effects'])}" if meta["effects"] else ""
        return f"A {meta['mood']} {noun} made with a {meta['instrument']} ({meta['motion']}){fx}."
    facts, flavour = _music_parts(meta, category, rng)
    adjectives = " ".join(flavour[:2])
    start = f"A {adjectives} {meta['genre']} {facts[0]}" if adjectives else f"A {meta['genre']} {facts[0]}"
    rest = ", ".join(facts[2:])
    return f"{start} played on {meta['instrument']}, {rest}."


TEMPLATES = (_tagged, _tagged, _plain, _sentence)  # the tagged form is the SA3 house style: twice as likely


def captions(meta: dict, category: str, rng: np.random.Generator, count: int = 4) -> list[str]:
    """``count`` different paraphrases of one clip's facts; the first is always the tagged house style."""
    out = [_tagged(meta, category, rng)]
    for _ in range(count * 4):
        if len(out) >= count:
            break
        text = TEMPLATES[int(rng.integers(len(TEMPLATES)))](meta, category, rng)
        if text not in out:
            out.append(text)
    return out
