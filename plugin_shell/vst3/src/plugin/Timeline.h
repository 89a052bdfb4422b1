#pragma once
// Where each block sits on the song's timeline: from the host playhead, or from the plugin clock
// (parameters: tempo, meter, start bar) for hosts without one, such as pedalboard. Bars are computed
// from ppq and the meters here (MeterMap), never taken from the host (Ardour 7's bar start is wrong,
// DawDreamer's meter is always 4/4).
//
// BarMap learns, as the playhead crosses each bar line, the host sample where that bar starts and
// the tempo there: it gives exact bar -> sample positions and bar lengths across tempo changes.

#include "plugin/Meters.h"
#include "plugin/Parameters.h"

#include <array>
#include <atomic>
#include <cmath>

namespace sa3
{
struct BlockTime
{
    bool playing = false;  // false: no position this block (stopped, or no playhead yet)
    juce::int64 sample = 0;
    double ppq = 0.0, bpm = 120.0, sampleRate = 44100.0;
    int numerator = 4, denominator = 4;
    bool meterFromClock = false;  // the plugin clock: one meter over the whole song
    bool hasLoop = false;
    double loopStartPpq = 0.0, loopEndPpq = 0.0;

    double barQuarters() const { return numerator * 4.0 / denominator; }
    double samplesPerQuarter() const { return 60.0 / bpm * sampleRate; }
    /** Offset in this block (may be outside [0, n)) where quarter-note position `q` falls. */
    juce::int64 offsetOf (double q) const { return static_cast<juce::int64> (std::floor ((q - ppq) * samplesPerQuarter() + 0.5)); }
    double endPpq (int numSamples) const { return ppq + numSamples / samplesPerQuarter(); }
};

/** The latest block's musical facts, for the engine thread (written by the audio thread). */
struct TimelineSnapshot
{
    std::atomic<bool> known { false };
    std::atomic<double> bpm { 120.0 }, loopStartPpq { 0.0 }, loopEndPpq { 0.0 };
    std::atomic<int> numerator { 4 }, denominator { 4 };
    std::atomic<bool> hasLoop { false };

    void store (const BlockTime& t);
};

/** The range the workflows act on, in quarter notes: the host's loop when it reports one, else the
    plugin's Start bar and Bars. */
struct Range
{
    double startPpq = 0.0, endPpq = 0.0;
    int firstBar = 0, bars = 0;  // 0-based whole bars covering it
};
Range rangeOf (const MeterMap& meters, bool hostLoop, double loopStartPpq, double loopEndPpq, const param::Values& values);

class Timeline
{
public:
    void prepare (double sampleRate);
    void reset() { clockRunning = false; }

    /** The block's timeline, then advances the plugin clock by `numSamples`. */
    BlockTime read (juce::AudioPlayHead* playHead, const param::Values& values, int numSamples);

private:
    BlockTime fromHost (juce::AudioPlayHead* playHead, const param::Values& values) const;
    BlockTime fromClock (const param::Values& values, int numSamples);

    double sampleRate = 44100.0;
    bool clockRunning = false;
    float clockPosition = 0, clockTempo = 0, clockNum = 0, clockDen = 0;
    juce::int64 clockStartSample = 0, clockElapsed = 0;
    double clockStartPpq = 0;
};

class BarMap
{
public:
    static constexpr int maxBars = 4096;
    static constexpr juce::int64 unknown = std::numeric_limits<juce::int64>::min();

    BarMap();
    /** Audio thread: records every bar line crossed in this block. */
    void learn (const BlockTime& t, int numSamples);
    void clear();

    /** Host sample where 0-based `bar` starts, if the playhead has crossed it. */
    juce::int64 sampleOf (int bar) const;
    /** Samples of bars [first, first + count): learned exactly, else at the best tempo known. */
    juce::int64 lengthOf (int first, int count, double fallbackBpm, double sampleRate) const;
    const MeterMap& meters() const { return meterMap; }

private:
    std::array<std::atomic<juce::int64>, maxBars> samples;
    std::array<std::atomic<float>, maxBars> tempos;
    MeterMap meterMap;
};
}
