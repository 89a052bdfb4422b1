#pragma once
// The plugin's parameters: everything a host (or a test) can automate, including the workflow
// triggers (a rising edge of Run starts the selected Mode) and the plugin clock for hosts without a
// playhead. Text (the prompt) cannot be a VST3 parameter: it lives in the plugin state (PluginState).

#include <juce_audio_processors/juce_audio_processors.h>

namespace sa3::param
{
inline constexpr const char* mode = "mode";
inline constexpr const char* run = "run";
inline constexpr const char* cancel = "cancel";
inline constexpr const char* newSeed = "new_seed";
inline constexpr const char* capture = "capture";
inline constexpr const char* startEngine = "start_engine";
inline constexpr const char* seed = "seed";
inline constexpr const char* bars = "bars";
inline constexpr const char* startBar = "start_bar";
inline constexpr const char* variationAmount = "variation";
inline constexpr const char* dryWet = "dry_wet";
inline constexpr const char* ab = "ab";
inline constexpr const char* clock = "clock";
inline constexpr const char* tempo = "tempo";
inline constexpr const char* meterNum = "meter_num";
inline constexpr const char* meterDen = "meter_den";
inline constexpr const char* position = "position";
inline constexpr const char* status = "status";      // read-only: what the plugin is doing
inline constexpr const char* progress = "progress";  // read-only: 0..1 of the running job

enum class Mode { loop = 0, inpaint, extend, variation };
inline const juce::StringArray modeNames { "Generate loop", "Inpaint", "Extend", "Variation" };

enum class Status { noEngine = 0, connecting, ready, working, done, error };
inline const juce::StringArray statusNames { "No engine", "Connecting", "Ready", "Working", "Done", "Error" };

inline const juce::StringArray meterDenominators { "1", "2", "4", "8", "16", "32" };

juce::AudioProcessorValueTreeState::ParameterLayout createLayout();

/** Lock-free reads of the current values, for the audio and engine threads. */
struct Values
{
    explicit Values (juce::AudioProcessorValueTreeState& state);

    float get (const std::atomic<float>* p) const { return p->load (std::memory_order_relaxed); }
    bool on (const std::atomic<float>* p) const { return get (p) >= 0.5f; }
    int meterDenominator() const;

    std::atomic<float>*mode, *run, *cancel, *newSeed, *capture, *startEngine, *seed, *bars, *startBar, *variationAmount,
        *dryWet, *ab, *clock, *tempo, *meterNum, *meterDen, *position;
};
}
