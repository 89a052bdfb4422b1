#pragma once
// Audio on the wire: an audio map {buffer, sample_rate, channels, frames} in the content, and a
// buffer of planar little-endian float32 (all of channel 0, then channel 1, ...).

#include <juce_core/juce_core.h>
#include <string>
#include <vector>

namespace sa3::proto
{
struct PlanarAudio
{
    int sampleRate = 0, channels = 0;
    juce::int64 frames = 0;
    std::vector<float> samples;  // channels * frames, planar

    const float* channel (int c) const { return samples.data() + static_cast<size_t> (c) * static_cast<size_t> (frames); }
};

/** The audio map for buffer `index`, and the buffer's bytes. */
juce::var audioMap (int index, const PlanarAudio& audio, std::string& bufferOut);

/** Reads a reply's audio map against its buffers; throws std::runtime_error saying what is wrong. */
PlanarAudio audioFromMap (const juce::var& map, const std::vector<std::string>& buffers);
}
