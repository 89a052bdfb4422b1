#include "plugin/Parameters.h"

namespace sa3::param
{
namespace
{
    using Attributes = juce::AudioParameterFloatAttributes;

    std::unique_ptr<juce::AudioParameterBool> trigger (const char* id, const char* name)
    {
        return std::make_unique<juce::AudioParameterBool> (juce::ParameterID { id, 1 }, name, false);
    }

    std::unique_ptr<juce::AudioParameterFloat> number (const char* id, const char* name, float lo, float hi, float step,
                                                       float initial, bool automatable = true)
    {
        return std::make_unique<juce::AudioParameterFloat> (juce::ParameterID { id, 1 }, name,
                                                            juce::NormalisableRange<float> (lo, hi, step), initial,
                                                            Attributes().withAutomatable (automatable));
    }
}

juce::AudioProcessorValueTreeState::ParameterLayout createLayout()
{
    juce::AudioProcessorValueTreeState::ParameterLayout layout;
    layout.add (std::make_unique<juce::AudioParameterChoice> (juce::ParameterID { mode, 1 }, "Mode", modeNames, 0));
    layout.add (trigger (run, "Run"), trigger (cancel, "Cancel"), trigger (newSeed, "Again with a new seed"),
                trigger (capture, "Capture"), trigger (startEngine, "Start engine"));
    layout.add (std::make_unique<juce::AudioParameterInt> (juce::ParameterID { seed, 1 }, "Seed", 0, 999999, 42));
    layout.add (std::make_unique<juce::AudioParameterInt> (juce::ParameterID { bars, 1 }, "Bars", 1, 64, 4));
    layout.add (std::make_unique<juce::AudioParameterInt> (juce::ParameterID { startBar, 1 }, "Start bar", 1, 999, 1));
    layout.add (number (variationAmount, "Variation amount", 0.01f, 1.0f, 0.01f, 0.7f));
    layout.add (number (dryWet, "Dry/wet", 0.0f, 1.0f, 0.0f, 1.0f));
    layout.add (std::make_unique<juce::AudioParameterChoice> (juce::ParameterID { ab, 1 }, "A/B",
                                                              juce::StringArray { "A: original", "B: generated" }, 1));
    layout.add (std::make_unique<juce::AudioParameterChoice> (juce::ParameterID { clock, 1 }, "Clock",
                                                              juce::StringArray { "Host playhead", "Plugin clock" }, 0));
    layout.add (number (tempo, "Plugin clock tempo", 20.0f, 300.0f, 0.01f, 120.0f));
    layout.add (std::make_unique<juce::AudioParameterInt> (juce::ParameterID { meterNum, 1 }, "Plugin clock meter numerator", 1, 32, 4));
    layout.add (std::make_unique<juce::AudioParameterChoice> (juce::ParameterID { meterDen, 1 }, "Plugin clock meter denominator",
                                                              meterDenominators, 2));
    layout.add (number (position, "Plugin clock start (bar)", 1.0f, 1000.0f, 0.001f, 1.0f));
    layout.add (std::make_unique<juce::AudioParameterChoice> (juce::ParameterID { status, 1 }, "Status", statusNames, 0,
                                                              juce::AudioParameterChoiceAttributes().withAutomatable (false)));
    layout.add (number (progress, "Progress", 0.0f, 1.0f, 0.0f, 0.0f, false));
    return layout;
}

Values::Values (juce::AudioProcessorValueTreeState& s)
    : mode (s.getRawParameterValue (param::mode)), run (s.getRawParameterValue (param::run)),
      cancel (s.getRawParameterValue (param::cancel)), newSeed (s.getRawParameterValue (param::newSeed)),
      capture (s.getRawParameterValue (param::capture)), startEngine (s.getRawParameterValue (param::startEngine)),
      seed (s.getRawParameterValue (param::seed)), bars (s.getRawParameterValue (param::bars)),
      startBar (s.getRawParameterValue (param::startBar)), variationAmount (s.getRawParameterValue (param::variationAmount)),
      dryWet (s.getRawParameterValue (param::dryWet)), ab (s.getRawParameterValue (param::ab)),
      clock (s.getRawParameterValue (param::clock)), tempo (s.getRawParameterValue (param::tempo)),
      meterNum (s.getRawParameterValue (param::meterNum)), meterDen (s.getRawParameterValue (param::meterDen)),
      position (s.getRawParameterValue (param::position))
{
}

int Values::meterDenominator() const
{
    return 1 << juce::jlimit (0, 5, static_cast<int> (get (meterDen) + 0.5f));
}
}
