#pragma once
// A workflow as a protocol job request: generate (a loop of whole bars), inpaint (a range of the
// captured audio), extend (the capture, N bars longer), variation (of the capture).

#include "plugin/CaptureBuffer.h"
#include "plugin/Parameters.h"
#include "protocol/Envelope.h"

namespace sa3
{
struct JobSpec
{
    param::Mode mode = param::Mode::loop;
    std::string requestId;
    juce::String prompt, model;
    juce::int64 seed = 0;
    double seconds = 0.0;             // loop: its length; extend: the total length
    const Captured* source = nullptr;  // inpaint, extend, variation
    double maskStart = 0.0, maskEnd = 0.0;  // inpaint: seconds into the source
    double variationAmount = 0.7;
};

const char* requestType (param::Mode mode);
juce::var requestContent (const JobSpec& job, proto::Frames& buffers);
}
