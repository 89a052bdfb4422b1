#include "plugin/PluginState.h"

namespace sa3
{
namespace
{
    juce::File defaultResultsFolder()
    {
        return juce::File::getSpecialLocation (juce::File::userMusicDirectory).getChildFile ("SA3 Results");
    }
}

PluginState::PluginState()
{
    state.python = SA3_DEFAULT_PYTHON;
    state.resultsFolder = defaultResultsFolder().getFullPathName();
}

TextState PluginState::text() const
{
    std::lock_guard<std::mutex> guard (lock);
    return state;
}

void PluginState::setText (const TextState& t)
{
    std::lock_guard<std::mutex> guard (lock);
    state = t;
}

void PluginState::addResult (const juce::String& path)
{
    std::lock_guard<std::mutex> guard (lock);
    state.results.add (path);
}

juce::String PluginState::status() const
{
    std::lock_guard<std::mutex> guard (lock);
    return statusLine;
}

void PluginState::setStatus (const juce::String& message)
{
    std::lock_guard<std::mutex> guard (lock);
    statusLine = message;
}

juce::String PluginState::notice() const
{
    std::lock_guard<std::mutex> guard (lock);
    return noticeLine;
}

void PluginState::setNotice (const juce::String& message)
{
    std::lock_guard<std::mutex> guard (lock);
    noticeLine = message;
}

juce::String PluginState::engine() const
{
    std::lock_guard<std::mutex> guard (lock);
    return engineLine;
}

void PluginState::setEngine (const juce::String& description)
{
    std::lock_guard<std::mutex> guard (lock);
    engineLine = description;
}

juce::XmlElement PluginState::toXml() const
{
    std::lock_guard<std::mutex> guard (lock);
    juce::XmlElement xml (tag);
    xml.setAttribute ("prompt", state.prompt);
    xml.setAttribute ("template", state.promptTemplate);
    xml.setAttribute ("model", state.model);
    xml.setAttribute ("python", state.python);
    xml.setAttribute ("results_folder", state.resultsFolder);
    xml.setAttribute ("status", statusLine);  // informative; not restored
    xml.setAttribute ("notice", noticeLine);
    xml.setAttribute ("engine", engineLine);  // informative; not restored
    for (const auto& path : state.results)
        xml.createNewChildElement ("result")->setAttribute ("path", path);
    return xml;
}

void PluginState::fromXml (const juce::XmlElement& xml)
{
    std::lock_guard<std::mutex> guard (lock);
    state.prompt = xml.getStringAttribute ("prompt", state.prompt);
    state.promptTemplate = xml.getStringAttribute ("template", state.promptTemplate);
    state.model = xml.getStringAttribute ("model", state.model);
    state.python = xml.getStringAttribute ("python", state.python);
    state.resultsFolder = xml.getStringAttribute ("results_folder", state.resultsFolder);
    state.results.clear();
    for (auto* result : xml.getChildWithTagNameIterator ("result"))
        state.results.add (result->getStringAttribute ("path"));
}

juce::String fillPrompt (const TextState& t, double bpm, int numerator, int denominator, int bars)
{
    return t.promptTemplate.replace ("{bpm}", bpm == std::floor (bpm) ? juce::String (static_cast<int> (bpm)) : juce::String (bpm, 2))
        .replace ("{meter}", juce::String (numerator) + "/" + juce::String (denominator))
        .replace ("{bars}", juce::String (bars))
        .replace ("{prompt}", t.prompt);
}
}
