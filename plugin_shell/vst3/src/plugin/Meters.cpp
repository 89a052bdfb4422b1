#include "plugin/Meters.h"

#include "plugin/Timeline.h"

namespace sa3
{
namespace
{
    constexpr double tolerance = 1e-6;  // quarters
}

MeterMap::MeterMap()
{
    set (0, 0.0, 0, 4, 4);
}

void MeterMap::set (int index, double ppq, int bar, int numerator, int denominator)
{
    auto& s = segments[static_cast<size_t> (index)];
    s.ppq.store (ppq, std::memory_order_relaxed);
    s.bar.store (bar, std::memory_order_relaxed);
    s.numerator.store (numerator, std::memory_order_relaxed);
    s.denominator.store (denominator, std::memory_order_relaxed);
}

void MeterMap::reset (int numerator, int denominator)
{
    set (0, 0.0, 0, numerator, denominator);
    count.store (1, std::memory_order_release);
}

bool MeterMap::learn (const BlockTime& t)
{
    const int n = count.load (std::memory_order_relaxed);
    if (n == 0)
    {
        reset (t.numerator, t.denominator);
        return false;
    }
    const int s = segmentOfPpq (t.ppq);
    const auto& segment = segments[static_cast<size_t> (s)];
    if (segment.numerator.load (std::memory_order_relaxed) == t.numerator
        && segment.denominator.load (std::memory_order_relaxed) == t.denominator)
        return false;
    // The new meter took over at the last bar line of the old one at or before this block.
    const int bar = barAt (t.ppq);
    const double at = ppqOfBar (bar);
    if (t.meterFromClock || s != n - 1 || n == maxChanges || at <= segment.ppq.load (std::memory_order_relaxed) + tolerance)
    {
        reset (t.numerator, t.denominator);  // a meter unlike the one learned here: the song changed
        return true;
    }
    set (n, at, bar, t.numerator, t.denominator);
    count.store (n + 1, std::memory_order_release);
    return false;
}

int MeterMap::segmentOfPpq (double ppq) const
{
    const int n = std::max (1, count.load (std::memory_order_acquire));
    int s = 0;
    while (s + 1 < n && segments[static_cast<size_t> (s + 1)].ppq.load (std::memory_order_relaxed) <= ppq + tolerance)
        ++s;
    return s;
}

int MeterMap::segmentOfBar (int bar) const
{
    const int n = std::max (1, count.load (std::memory_order_acquire));
    int s = 0;
    while (s + 1 < n && segments[static_cast<size_t> (s + 1)].bar.load (std::memory_order_relaxed) <= bar)
        ++s;
    return s;
}

int MeterMap::barAt (double ppq) const
{
    const auto& s = segments[static_cast<size_t> (segmentOfPpq (ppq))];
    const double bars = (ppq - s.ppq.load (std::memory_order_relaxed)) / s.quarters();
    return s.bar.load (std::memory_order_relaxed) + static_cast<int> (std::floor (bars + tolerance));
}

double MeterMap::ppqOfBar (int bar) const
{
    const auto& s = segments[static_cast<size_t> (segmentOfBar (bar))];
    return s.ppq.load (std::memory_order_relaxed) + (bar - s.bar.load (std::memory_order_relaxed)) * s.quarters();
}

double MeterMap::quartersOfBar (int bar) const
{
    return segments[static_cast<size_t> (segmentOfBar (bar))].quarters();
}

int MeterMap::numeratorOfBar (int bar) const
{
    return segments[static_cast<size_t> (segmentOfBar (bar))].numerator.load (std::memory_order_relaxed);
}

int MeterMap::denominatorOfBar (int bar) const
{
    return segments[static_cast<size_t> (segmentOfBar (bar))].denominator.load (std::memory_order_relaxed);
}
}
