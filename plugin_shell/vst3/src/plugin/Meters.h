#pragma once
// Where the bars fall, in quarter notes, when the meter changes during the song (4/4, then 7/8).
// A host reports the meter of each block, not where it changed: MeterMap notes each change at the
// bar line of the old meter where the new one took over (meters change on bar lines), so bar numbers
// and bar starts follow the song's own meter map once the playhead has played through its changes.
// Until then (or a playhead that starts after a change) the first meter seen is taken from quarter 0;
// the plugin clock has one meter for the whole song, so a change of its meter starts the map afresh.
//
// Written by the audio thread only (no locks, no allocation: a fixed table of atomics), read by any.

#include <juce_core/juce_core.h>

#include <array>
#include <atomic>

namespace sa3
{
struct BlockTime;

class MeterMap
{
public:
    static constexpr int maxChanges = 64;

    MeterMap();
    /** Not on the audio thread while it runs: one meter from quarter 0. */
    void reset (int numerator, int denominator);
    /** Audio thread: notes the block's meter. True when the song's meter map turned out to differ from
        what was learned (bars learned before no longer hold); the map then restarts from this meter. */
    bool learn (const BlockTime& t);

    bool known() const { return count.load (std::memory_order_acquire) > 0; }
    /** 0-based bar containing quarter `ppq` (a position within a millionth of a quarter before a bar
        line counts as on it). */
    int barAt (double ppq) const;
    double ppqOfBar (int bar) const;
    double quartersOfBar (int bar) const;
    int numeratorOfBar (int bar) const;
    int denominatorOfBar (int bar) const;

private:
    struct Segment
    {
        std::atomic<double> ppq { 0.0 };
        std::atomic<int> bar { 0 }, numerator { 4 }, denominator { 4 };
        double quarters() const { return numerator.load (std::memory_order_relaxed) * 4.0 / denominator.load (std::memory_order_relaxed); }
    };
    int segmentOfPpq (double ppq) const;
    int segmentOfBar (int bar) const;
    void set (int index, double ppq, int bar, int numerator, int denominator);

    std::array<Segment, maxChanges> segments;
    std::atomic<int> count { 0 };
};
}
