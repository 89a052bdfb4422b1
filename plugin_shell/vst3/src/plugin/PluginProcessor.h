#pragma once
// The audio side of the plugin. processBlock reads the timeline, feeds the capture, mixes the
// playing result in and sanitises the output: no locks, no allocation, no waiting. Everything else
// runs on the engine thread (EngineWorker) or the message thread (state, editor).

#include "plugin/EngineWorker.h"

namespace sa3
{
class Processor : public juce::AudioProcessor
{
public:
    Processor();
    ~Processor() override;

    void prepareToPlay (double sampleRate, int maximumBlockSize) override;
    void releaseResources() override {}
    void reset() override;
    bool isBusesLayoutSupported (const BusesLayout& layouts) const override;
    void processBlock (juce::AudioBuffer<float>& buffer, juce::MidiBuffer& midi) override;
    using juce::AudioProcessor::processBlock;

    juce::AudioProcessorEditor* createEditor() override;
    bool hasEditor() const override { return true; }

    const juce::String getName() const override { return "SA3"; }
    bool acceptsMidi() const override { return false; }
    bool producesMidi() const override { return false; }
    double getTailLengthSeconds() const override { return 0.0; }
    int getNumPrograms() override { return 1; }
    int getCurrentProgram() override { return 0; }
    void setCurrentProgram (int) override {}
    const juce::String getProgramName (int) override { return {}; }
    void changeProgramName (int, const juce::String&) override {}

    void getStateInformation (juce::MemoryBlock& destination) override;
    void setStateInformation (const void* data, int sizeInBytes) override;

    juce::AudioProcessorValueTreeState parameters;
    PluginState state;
    EngineWorker& engine() { return *worker; }

    static constexpr double captureSeconds = 90.0;

private:
    param::Values values;
    CaptureBuffer capture;
    Playback playback;
    BarMap bars;
    TimelineSnapshot snapshot;
    std::atomic<double> sampleRate { 44100.0 };
    std::atomic<bool> prepared { false }, restoreOnPrepare { false };
    Timeline timeline;
    PluginContext context;
    std::unique_ptr<EngineWorker> worker;  // last: stopped before the rest goes

    JUCE_DECLARE_NON_COPYABLE_WITH_LEAK_DETECTOR (Processor)
};
}
