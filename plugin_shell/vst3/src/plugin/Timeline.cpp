#include "plugin/Timeline.h"

namespace sa3
{
void Timeline::prepare (double rate)
{
    sampleRate = rate;
    clockRunning = false;
}

BlockTime Timeline::read (juce::AudioPlayHead* playHead, const param::Values& values, int numSamples)
{
    if (values.get (values.clock) >= 0.5f)
        return fromClock (values, numSamples);
    clockRunning = false;
    return fromHost (playHead, values);
}

BlockTime Timeline::fromHost (juce::AudioPlayHead* playHead, const param::Values& values) const
{
    BlockTime t;
    t.sampleRate = sampleRate;
    if (playHead == nullptr)
        return t;
    const auto position = playHead->getPosition();
    if (! position)
        return t;
    const auto samples = position->getTimeInSamples();
    const auto ppq = position->getPpqPosition();
    const auto bpm = position->getBpm();
    if (! samples || ! ppq || ! bpm || ! (*bpm > 0.0) || ! std::isfinite (*ppq))
        return t;
    t.playing = position->getIsPlaying();
    t.sample = *samples;
    t.ppq = *ppq;
    t.bpm = *bpm;
    if (const auto meter = position->getTimeSignature(); meter && meter->numerator > 0 && meter->denominator > 0)
    {
        t.numerator = meter->numerator;
        t.denominator = meter->denominator;
    }
    else
    {
        t.numerator = static_cast<int> (values.get (values.meterNum));
        t.denominator = values.meterDenominator();
    }
    if (const auto loop = position->getLoopPoints(); loop && position->getIsLooping() && loop->ppqEnd > loop->ppqStart)
    {
        t.hasLoop = true;
        t.loopStartPpq = loop->ppqStart;
        t.loopEndPpq = loop->ppqEnd;
    }
    return t;
}

BlockTime Timeline::fromClock (const param::Values& values, int numSamples)
{
    const float position = values.get (values.position), tempo = values.get (values.tempo);
    const float num = values.get (values.meterNum), den = values.get (values.meterDen);
    BlockTime t;
    t.sampleRate = sampleRate;
    t.playing = true;
    t.meterFromClock = true;
    t.bpm = tempo;
    t.numerator = static_cast<int> (num);
    t.denominator = values.meterDenominator();

    if (! clockRunning || position != clockPosition || num != clockNum || den != clockDen)
    {
        // (Re)start at the clock's start bar: a transport jump.
        clockStartPpq = (static_cast<double> (position) - 1.0) * t.barQuarters();
        clockStartSample = static_cast<juce::int64> (std::floor (clockStartPpq * t.samplesPerQuarter() + 0.5));
        clockElapsed = 0;
    }
    else if (tempo != clockTempo)
    {
        // A tempo change continues from where the clock is.
        clockStartPpq += clockElapsed / (60.0 / clockTempo * sampleRate);
        clockStartSample += clockElapsed;
        clockElapsed = 0;
    }
    clockRunning = true;
    clockPosition = position;
    clockTempo = tempo;
    clockNum = num;
    clockDen = den;

    t.sample = clockStartSample + clockElapsed;
    t.ppq = clockStartPpq + clockElapsed / t.samplesPerQuarter();
    clockElapsed += numSamples;
    return t;
}

void TimelineSnapshot::store (const BlockTime& t)
{
    bpm.store (t.bpm, std::memory_order_relaxed);
    numerator.store (t.numerator, std::memory_order_relaxed);
    denominator.store (t.denominator, std::memory_order_relaxed);
    hasLoop.store (t.hasLoop, std::memory_order_relaxed);
    loopStartPpq.store (t.loopStartPpq, std::memory_order_relaxed);
    loopEndPpq.store (t.loopEndPpq, std::memory_order_relaxed);
    known.store (true, std::memory_order_release);
}

Range rangeOf (const MeterMap& meters, bool hostLoop, double loopStartPpq, double loopEndPpq, const param::Values& values)
{
    Range r;
    if (hostLoop && loopEndPpq > loopStartPpq)
    {
        r.startPpq = loopStartPpq;
        r.endPpq = loopEndPpq;
        r.firstBar = meters.barAt (loopStartPpq);
        const int endBar = meters.barAt (loopEndPpq);
        r.bars = std::max (1, endBar - r.firstBar + (meters.ppqOfBar (endBar) < loopEndPpq - 1e-6 ? 1 : 0));
        return r;
    }
    r.firstBar = std::max (0, static_cast<int> (values.get (values.startBar)) - 1);
    r.bars = std::max (1, static_cast<int> (values.get (values.bars)));
    r.startPpq = meters.ppqOfBar (r.firstBar);
    r.endPpq = meters.ppqOfBar (r.firstBar + r.bars);
    return r;
}

BarMap::BarMap()
{
    clear();
}

void BarMap::clear()
{
    for (auto& s : samples)
        s.store (unknown, std::memory_order_relaxed);
    for (auto& t : tempos)
        t.store (0.0f, std::memory_order_relaxed);
}

void BarMap::learn (const BlockTime& t, int numSamples)
{
    if (! t.playing)
        return;
    if (meterMap.learn (t))
        clear();  // the song's meters changed: every bar line after the change moved
    const double end = t.endPpq (numSamples);
    int bar = meterMap.barAt (t.ppq);
    if (meterMap.ppqOfBar (bar) < t.ppq - 1e-6)
        ++bar;
    for (; meterMap.ppqOfBar (bar) < end && bar < maxBars; ++bar)
    {
        if (bar < 0)
            continue;
        samples[static_cast<size_t> (bar)].store (t.sample + t.offsetOf (meterMap.ppqOfBar (bar)), std::memory_order_relaxed);
        tempos[static_cast<size_t> (bar)].store (static_cast<float> (t.bpm), std::memory_order_relaxed);
    }
}

juce::int64 BarMap::sampleOf (int bar) const
{
    return (bar >= 0 && bar < maxBars) ? samples[static_cast<size_t> (bar)].load (std::memory_order_relaxed) : unknown;
}

juce::int64 BarMap::lengthOf (int first, int count, double fallbackBpm, double sampleRate) const
{
    const auto start = sampleOf (first), end = sampleOf (first + count);
    if (start != unknown && end != unknown && end > start)
        return end - start;
    double bpm = fallbackBpm;
    if (first >= 0 && first < maxBars)
        if (const float learned = tempos[static_cast<size_t> (first)].load (std::memory_order_relaxed); learned > 0.0f)
            bpm = learned;
    const double quarters = meterMap.ppqOfBar (first + count) - meterMap.ppqOfBar (first);
    return static_cast<juce::int64> (std::floor (quarters * 60.0 / bpm * sampleRate + 0.5));
}
}
