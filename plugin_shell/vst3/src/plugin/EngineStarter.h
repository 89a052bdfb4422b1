#pragma once
// "Start engine": runs `sa3 serve [--model M]` through `<python>` (the console script's entry point) as a
// process of its own, detached from the host, logging next to the connection file. Several plugin
// instances share the engine it starts; it keeps running when the host quits.

#include <juce_core/juce_core.h>

namespace sa3
{
/** Starts the engine; returns "" or what went wrong, in words for the status line. */
juce::String startEngine (const juce::String& python, const juce::String& model, const juce::File& connectionFile);

/** Reaps engines this process started that have exited (no zombies). */
void reapStartedEngines();
}
