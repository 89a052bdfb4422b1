#pragma once
// The five workflows between the timeline and the engine: turning the current range, capture and
// parameters into a job request, and a job's reply into a take that plays in place plus result files.

#include "plugin/PluginContext.h"
#include "plugin/Requests.h"

#include <optional>

namespace sa3
{
struct PendingJob
{
    std::string requestId, msgId;
    param::Mode mode = param::Mode::loop;
    double anchorPpq = 0.0;
    juce::int64 anchorSample = BarMap::unknown;
    juce::var sidecar;  // what defines the result, for its JSON file
};

struct PreparedJob
{
    JobSpec spec;
    PendingJob pending;
};

/** The request for `mode` now; a message in words when it cannot be made (e.g. nothing captured). */
std::optional<PreparedJob> prepareJob (PluginContext& ctx, param::Mode mode, const Captured* capture, juce::int64 seed,
                                       juce::String& whyNot);

/** Plays the reply's audio in place and writes it as files; returns the status line. Throws
    std::runtime_error with a message for people when the reply cannot be used. */
juce::String finishJob (PluginContext& ctx, const PendingJob& job, const juce::var& content, const proto::Frames& buffers);

/** After a session reopens: plays the newest result file again; returns "" or what is wrong. */
juce::String restoreLatestResult (PluginContext& ctx);
}
