#pragma once
// Capture: what plays through the plugin over a timeline range, stamped with its host sample
// position. The audio thread writes into memory allocated in prepare(); the engine thread takes the
// finished capture. The hand-off is one atomic state: only the audio thread writes while the state is
// armed/recording, only the engine thread reads once it is complete.

#include "plugin/Timeline.h"

#include <mutex>
#include <vector>

namespace sa3
{
struct Captured
{
    std::vector<float> samples;  // planar
    int channels = 0;
    juce::int64 frames = 0, startSample = 0;
    double sampleRate = 44100.0, startPpq = 0, endPpq = 0, bpmAtEnd = 120.0;
    int numerator = 4, denominator = 4;
};

class CaptureBuffer
{
public:
    enum State { idle, armed, recording, complete, overflow };

    /** Not on the audio thread: allocates room for `seconds` of audio. */
    void prepare (int channels, double sampleRate, double seconds);

    /** Audio thread. Arms on a rising edge of `armRequest`; records [startPpq, endPpq) once the
        playhead reaches startPpq (the range as given by the latest block); a jump of the playhead
        while recording starts over. */
    void process (const BlockTime& t, const juce::AudioBuffer<float>& input, int numSamples, bool armRequest,
                  double startPpq, double endPpq);

    /** Engine thread: moves a complete capture out (the buffer is free again). */
    bool take (Captured& out);
    State state() const { return stateNow.load (std::memory_order_acquire); }
    juce::int64 capacityFrames() const { return capacity; }

private:
    std::mutex memory;  // prepare() vs take(); never taken on the audio thread
    std::vector<float> data;
    int channels = 0;
    juce::int64 capacity = 0;
    std::atomic<State> stateNow { idle };
    bool lastRequest = false;

    // written by the audio thread while armed/recording, read by take() once complete
    juce::int64 written = 0, startSample = 0, nextSample = 0;
    double rangeStart = 0, rangeEnd = 0, bpmAtEnd = 120.0, rate = 44100.0;
    int numerator = 4, denominator = 4;
};
}
