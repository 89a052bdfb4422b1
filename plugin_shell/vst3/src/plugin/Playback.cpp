#include "plugin/Playback.h"

namespace sa3
{
Playback::~Playback()
{
    collectGarbage();
    delete incoming.exchange (nullptr);
    delete playing.exchange (nullptr);
}

void Playback::publish (std::unique_ptr<Take> take)
{
    delete incoming.exchange (take.release(), std::memory_order_acq_rel);
}

void Playback::collectGarbage()
{
    const auto scope = retiredFifo.read (retiredFifo.getNumReady());
    for (int i = 0; i < scope.blockSize1; ++i)
        delete retired[static_cast<size_t> (scope.startIndex1 + i)];
    for (int i = 0; i < scope.blockSize2; ++i)
        delete retired[static_cast<size_t> (scope.startIndex2 + i)];
}

juce::int64 Playback::anchorSample() const
{
    if (auto* waiting = incoming.load (std::memory_order_acquire))
        return waiting->anchorSample.load();
    if (auto* take = playing.load (std::memory_order_acquire))
        return take->anchorSample.load();
    return BarMap::unknown;
}

void Playback::process (const BlockTime& t, juce::AudioBuffer<float>& buffer, int numSamples, float wet, bool playTake)
{
    if (incoming.load (std::memory_order_relaxed) != nullptr && retiredFifo.getFreeSpace() > 0)
    {
        auto* next = incoming.exchange (nullptr, std::memory_order_acq_rel);
        if (auto* old = playing.exchange (next, std::memory_order_acq_rel))
        {
            const auto scope = retiredFifo.write (1);
            retired[static_cast<size_t> (scope.blockSize1 > 0 ? scope.startIndex1 : scope.startIndex2)] = old;
        }
    }
    auto* take = playing.load (std::memory_order_relaxed);
    if (take == nullptr || ! t.playing || take->frames == 0)
        return;

    // Anchored (again) each time the playhead crosses the take's start, so a changed tempo map is
    // followed; before a first crossing a playhead already past it extrapolates at this tempo. A host's
    // ppq may be rounded (Ardour 7: to 1/1920 quarter), so a sample computed from it moves by up to a
    // tick from one pass to the next: a known anchor that close is kept, not moved.
    const auto offset = t.offsetOf (take->anchorPpq);
    auto anchor = take->anchorSample.load (std::memory_order_relaxed);
    const auto tick = static_cast<juce::int64> (std::ceil (t.samplesPerQuarter() / hostTicksPerQuarter)) + 1;
    const bool crossing = offset >= 0 && offset < numSamples;
    if ((crossing && (anchor == BarMap::unknown || std::abs (t.sample + offset - anchor) > tick))
        || (anchor == BarMap::unknown && offset < 0))
        take->anchorSample.store (anchor = t.sample + offset, std::memory_order_relaxed);
    if (anchor == BarMap::unknown || ! playTake)
        return;

    const auto first = std::max<juce::int64> (0, anchor - t.sample);
    const auto last = std::min<juce::int64> (numSamples, anchor + take->frames - t.sample);
    const float dry = 1.0f - wet;
    for (int c = 0; c < buffer.getNumChannels(); ++c)
    {
        float* out = buffer.getWritePointer (c);
        const float* in = take->channel (std::min (c, take->channels - 1));
        for (auto i = first; i < last; ++i)
            out[i] = out[i] * dry + in[t.sample + i - anchor] * wet;
    }
}

void sanitize (juce::AudioBuffer<float>& buffer, int numSamples)
{
    for (int c = 0; c < buffer.getNumChannels(); ++c)
    {
        float* data = buffer.getWritePointer (c);
        for (int i = 0; i < numSamples; ++i)
            if (! std::isfinite (data[i]))
                data[i] = 0.0f;
    }
}
}
