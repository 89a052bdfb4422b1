#include "plugin/CaptureBuffer.h"

namespace sa3
{
void CaptureBuffer::prepare (int numChannels, double sampleRate, double seconds)
{
    std::lock_guard<std::mutex> lock (memory);
    const auto frames = static_cast<juce::int64> (sampleRate * seconds);
    if (numChannels != channels || frames != capacity)
    {
        data.assign (static_cast<size_t> (numChannels) * static_cast<size_t> (frames), 0.0f);
        channels = numChannels;
        capacity = frames;
    }
    rate = sampleRate;
    if (stateNow.load() != complete)
        stateNow.store (idle);
}

void CaptureBuffer::process (const BlockTime& t, const juce::AudioBuffer<float>& input, int numSamples,
                             bool armRequest, double startPpq, double endPpq)
{
    const bool rising = armRequest && ! lastRequest;
    lastRequest = armRequest;
    auto state = stateNow.load (std::memory_order_acquire);
    if (rising && state != armed && state != recording)
    {
        state = armed;
        rangeStart = startPpq;
        rangeEnd = endPpq;
        stateNow.store (armed, std::memory_order_release);
    }
    if ((state != armed && state != recording) || ! t.playing || channels == 0)
        return;
    // The range is bars; where they fall is refined as the playhead learns the song's meters
    // (an armed capture of bars across a meter change not played through yet).
    if (state == armed)
        rangeStart = startPpq;
    rangeEnd = endPpq;

    if (state == recording && t.sample != nextSample)
        state = armed;  // the transport jumped: wait for the range start again
    auto from = juce::int64 { 0 };
    if (state == armed)
    {
        from = t.offsetOf (rangeStart);
        if (from < 0 || from >= numSamples)
        {
            stateNow.store (armed, std::memory_order_release);
            return;
        }
        startSample = t.sample + from;
        written = 0;
        state = recording;
    }
    const auto to = std::min<juce::int64> (numSamples, t.offsetOf (rangeEnd));
    const int inputChannels = input.getNumChannels();
    for (auto i = from; i < to; ++i, ++written)
    {
        if (written >= capacity)
        {
            stateNow.store (overflow, std::memory_order_release);
            return;
        }
        for (int c = 0; c < channels; ++c)
        {
            const float* src = input.getReadPointer (std::min (c, inputChannels - 1));
            data[static_cast<size_t> (c * capacity + written)] = src[i];
        }
    }
    nextSample = t.sample + numSamples;
    if (to < numSamples)
    {
        bpmAtEnd = t.bpm;
        numerator = t.numerator;
        denominator = t.denominator;
        stateNow.store (complete, std::memory_order_release);
    }
    else
        stateNow.store (recording, std::memory_order_release);
}

bool CaptureBuffer::take (Captured& out)
{
    std::lock_guard<std::mutex> lock (memory);
    if (stateNow.load (std::memory_order_acquire) != complete)
        return false;
    out.channels = channels;
    out.frames = written;
    out.samples.resize (static_cast<size_t> (channels) * static_cast<size_t> (written));
    for (int c = 0; c < channels; ++c)
        std::copy_n (data.begin() + static_cast<long> (c * capacity), written,
                     out.samples.begin() + static_cast<long> (c * written));
    out.startSample = startSample;
    out.sampleRate = rate;
    out.startPpq = rangeStart;
    out.endPpq = rangeEnd;
    out.bpmAtEnd = bpmAtEnd;
    out.numerator = numerator;
    out.denominator = denominator;
    stateNow.store (idle, std::memory_order_release);
    return true;
}
}
