#include "plugin/PluginContext.h"

namespace sa3
{
void PluginContext::setParameter (const char* id, float plainValue)
{
    if (auto* p = parameters.getParameter (id))
    {
        const float normalised = p->convertTo0to1 (plainValue);
        if (p->getValue() != normalised)
            p->setValueNotifyingHost (normalised);
    }
}

void PluginContext::report (param::Status status, const juce::String& message)
{
    state.setStatus (message);
    setParameter (param::status, static_cast<float> (static_cast<int> (status)));
    DBG ("SA3: " << message);
}

void PluginContext::reportProgress (float fraction)
{
    setParameter (param::progress, juce::jlimit (0.0f, 1.0f, fraction));
}
}
