#pragma once
// Results as files the producer drags onto a track: a 32-bit float WAV plus a JSON sidecar with
// everything that defines the clip. Never overwrites: each result gets a new numbered name, and each
// file is written to a temporary name first and then linked into place (atomic, refuses to replace).

#include "protocol/AudioMap.h"

#include <juce_core/juce_core.h>
#include <optional>

namespace sa3::results
{
/** Writes `<folder>/<stem>-NNN.wav` and `.json`; returns the WAV. Throws std::runtime_error. */
juce::File write (const juce::File& folder, const juce::String& stem, const proto::PlanarAudio& audio,
                  const juce::var& sidecar);

/** Reads a WAV this plugin wrote (32-bit float); nothing if missing or not in that format. */
std::optional<proto::PlanarAudio> readWav (const juce::File& file);
juce::var readSidecar (const juce::File& wav);
juce::File sidecarFor (const juce::File& wav);
}
