#pragma once
// What the plugin keeps besides its parameters: the prompt and its template, the model, the Python
// that starts an engine, the results folder and the result files. Saved with the session (next to the
// parameters) and restored from it; shared by the message thread and the engine thread (locked, never
// touched on the audio thread). The status line is kept here too, so hosts without an editor (and
// the tests) can read it from the saved state.

#include <juce_core/juce_core.h>
#include <mutex>

namespace sa3
{
struct TextState
{
    juce::String prompt { "Genre: electronic, Instruments: drums, bass, synthesizer" };
    // daw_presets/prompts/music_loop.toml, with the slots the plugin fills
    juce::String promptTemplate { "TrackType: Music, VocalType: Instrumental, BPM: {bpm}, Time Signature: {meter}, "
                                  "seamless {bars} bar loop, {prompt}" };
    juce::String model;         // empty: the engine's default model
    juce::String python;        // the Python whose sa3_engine "Start engine" runs
    juce::String resultsFolder;
    juce::StringArray results;  // result WAVs, oldest first
};

class PluginState
{
public:
    PluginState();

    TextState text() const;
    void setText (const TextState& t);
    void addResult (const juce::String& path);

    juce::String status() const;
    void setStatus (const juce::String& message);
    /** A problem worth keeping in view while the status line moves on (e.g. a missing result file). */
    juce::String notice() const;
    void setNotice (const juce::String& message);
    /** Which engine the plugin uses: endpoint, local or remote, its device once it answered. */
    juce::String engine() const;
    void setEngine (const juce::String& description);

    /** The state element saved with the session (parameters are added by the processor). */
    juce::XmlElement toXml() const;
    /** Restores from a saved element; fields missing from it keep their defaults. */
    void fromXml (const juce::XmlElement& xml);

    static constexpr const char* tag = "SA3Text";

private:
    mutable std::mutex lock;
    TextState state;
    juce::String statusLine { "Starting" }, noticeLine, engineLine { "No engine yet" };
};

/** The prompt sent to the engine: the template with {bpm}, {meter}, {bars}, {prompt} filled in. */
juce::String fillPrompt (const TextState& t, double bpm, int numerator, int denominator, int bars);
}
