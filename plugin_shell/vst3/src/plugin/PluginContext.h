#pragma once
// What the engine thread shares with the processor: parameters, text state, the capture, playback
// and timeline hand-offs, and the status it reports (status line + the read-only Status/Progress
// parameters, which reach the host through the VST3 output parameter changes).

#include "plugin/CaptureBuffer.h"
#include "plugin/Parameters.h"
#include "plugin/Playback.h"
#include "plugin/PluginState.h"
#include "plugin/Timeline.h"

namespace sa3
{
struct PluginContext
{
    juce::AudioProcessorValueTreeState& parameters;
    param::Values& values;
    PluginState& state;
    CaptureBuffer& capture;
    Playback& playback;
    BarMap& bars;
    TimelineSnapshot& timeline;
    std::atomic<double>& sampleRate;

    void report (param::Status status, const juce::String& message);
    void reportProgress (float fraction);
    void setParameter (const char* id, float plainValue);
};
}
