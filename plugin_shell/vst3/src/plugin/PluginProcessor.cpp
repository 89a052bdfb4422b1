#include "plugin/PluginProcessor.h"

#include "plugin/PluginEditor.h"

namespace sa3
{
namespace
{
    const char* const triggerIds[] = { param::run, param::cancel, param::newSeed, param::startEngine, param::capture };
}

Processor::Processor()
    : AudioProcessor (BusesProperties()
                          .withInput ("Input", juce::AudioChannelSet::stereo(), true)
                          .withOutput ("Output", juce::AudioChannelSet::stereo(), true)),
      parameters (*this, nullptr, "SA3Parameters", param::createLayout()), values (parameters),
      context { parameters, values, state, capture, playback, bars, snapshot, sampleRate },
      worker (std::make_unique<EngineWorker> (context))
{
}

Processor::~Processor()
{
    worker.reset();
}

void Processor::prepareToPlay (double rate, int)
{
    sampleRate.store (rate);
    timeline.prepare (rate);
    capture.prepare (juce::jlimit (1, 2, getTotalNumInputChannels()), rate, captureSeconds);
    prepared.store (true);
    if (restoreOnPrepare.exchange (false))
        worker->restoreResultsNow();  // at the host's rate, before the first block plays
}

void Processor::reset()
{
    timeline.reset();
}

bool Processor::isBusesLayoutSupported (const BusesLayout& layouts) const
{
    const auto out = layouts.getMainOutputChannelSet();
    return (out == juce::AudioChannelSet::mono() || out == juce::AudioChannelSet::stereo())
           && layouts.getMainInputChannelSet() == out;
}

void Processor::processBlock (juce::AudioBuffer<float>& buffer, juce::MidiBuffer&)
{
    juce::ScopedNoDenormals noDenormals;
    const int n = buffer.getNumSamples();
    for (int c = getTotalNumInputChannels(); c < getTotalNumOutputChannels(); ++c)
        buffer.clear (c, 0, n);
    if (n == 0)
        return;

    const auto t = timeline.read (getPlayHead(), values, n);
    if (t.playing)
    {
        snapshot.store (t);
        bars.learn (t, n);
    }
    const auto range = rangeOf (bars.meters(), t.hasLoop, t.loopStartPpq, t.loopEndPpq, values);
    capture.process (t, buffer, n, values.on (values.capture), range.startPpq, range.endPpq);
    playback.process (t, buffer, n, values.get (values.dryWet), values.get (values.ab) >= 0.5f);
    sanitize (buffer, n);
}

juce::AudioProcessorEditor* Processor::createEditor()
{
    return new Editor (*this);
}

void Processor::getStateInformation (juce::MemoryBlock& destination)
{
    juce::XmlElement root ("SA3State");
    root.setAttribute ("version", 1);
    if (auto xml = parameters.copyState().createXml())
        root.addChildElement (xml.release());
    root.addChildElement (new juce::XmlElement (state.toXml()));
    copyXmlToBinary (root, destination);
}

void Processor::setStateInformation (const void* data, int sizeInBytes)
{
    const auto root = getXmlFromBinary (data, sizeInBytes);
    if (root == nullptr || ! root->hasTagName ("SA3State"))
        return;
    if (auto* xml = root->getChildByName (parameters.state.getType()))
    {
        auto tree = juce::ValueTree::fromXml (*xml);
        for (auto* id : triggerIds)  // a restored session never starts a job by itself
            if (auto child = tree.getChildWithProperty ("id", id); child.isValid())
                child.setProperty ("value", 0.0f, nullptr);
        parameters.replaceState (tree);
    }
    if (auto* text = root->getChildByName (PluginState::tag))
        state.fromXml (*text);
    // A restored session plays its result from the first block (an offline export starts at once):
    // read it now when the host rate is known, else when the host prepares; the engine thread also
    // picks it up for hosts that restore a state without ever preparing.
    if (prepared.load())
        return worker->restoreResultsNow();
    restoreOnPrepare.store (true);
    worker->restoreResults();
}
}

juce::AudioProcessor* JUCE_CALLTYPE createPluginFilter()
{
    return new sa3::Processor();
}
