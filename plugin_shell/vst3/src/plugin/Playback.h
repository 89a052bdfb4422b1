#pragma once
// Playing a result back in time with the host: result sample k sounds at host sample anchor + k,
// whatever the tempo does and wherever the transport jumps. The anchor is a host sample; a result
// placed at a bar nobody has played through yet is anchored when the playhead crosses that bar.
//
// Hand-offs without locks or allocation on the audio thread: the engine thread publishes a Take
// through an atomic pointer; the audio thread swaps it in and returns the old one through a
// single-producer FIFO for the engine thread to delete.

#include "plugin/Timeline.h"

#include <memory>
#include <vector>

namespace sa3
{
/** The coarsest ppq resolution expected of a host (Ardour 7 counts 1920 ticks per quarter). */
inline constexpr double hostTicksPerQuarter = 1920.0;

struct Take
{
    std::vector<float> samples;  // planar, at the host sample rate
    int channels = 0;
    juce::int64 frames = 0;
    double anchorPpq = 0.0;
    std::atomic<juce::int64> anchorSample { BarMap::unknown };

    const float* channel (int c) const { return samples.data() + static_cast<size_t> (c) * static_cast<size_t> (frames); }
};

class Playback
{
public:
    ~Playback();

    /** Engine thread: the take to play from now on (replacing any not yet picked up). */
    void publish (std::unique_ptr<Take> take);
    /** Engine thread: deletes takes the audio thread no longer uses. */
    void collectGarbage();
    /** Any thread: the anchor of the take playing (or waiting), if known. */
    juce::int64 anchorSample() const;

    /** Audio thread: mixes the take into `buffer` (dry in place): dry*(1-wet) + take*wet. */
    void process (const BlockTime& t, juce::AudioBuffer<float>& buffer, int numSamples, float wet, bool playTake);

private:
    std::atomic<Take*> incoming { nullptr };
    std::atomic<Take*> playing { nullptr };  // owned by the audio thread; read-only elsewhere
    static constexpr int retiredSlots = 16;
    juce::AbstractFifo retiredFifo { retiredSlots };
    std::array<Take*, retiredSlots> retired {};
};

/** Replaces NaN and infinities by silence, so nothing but finite samples reaches the host. */
void sanitize (juce::AudioBuffer<float>& buffer, int numSamples);
}
