#pragma once
// The small editor: engine status and progress, the prompt, one button per workflow, the range and
// mix controls, and the newest result file to drag onto a track. Every button does what a parameter
// (or the state, for the prompt) can do, so hosts and tests reach the same actions without it.

#include "plugin/PluginProcessor.h"

namespace sa3
{
class Editor : public juce::AudioProcessorEditor, public juce::DragAndDropContainer, private juce::Timer
{
public:
    explicit Editor (Processor& processor);
    ~Editor() override;
    void resized() override;
    void paint (juce::Graphics& g) override;
    void mouseDrag (const juce::MouseEvent& event) override;

private:
    using SliderAttachment = juce::AudioProcessorValueTreeState::SliderAttachment;
    using ButtonAttachment = juce::AudioProcessorValueTreeState::ButtonAttachment;
    using ComboAttachment = juce::AudioProcessorValueTreeState::ComboBoxAttachment;

    struct LabelledSlider
    {
        juce::Slider slider { juce::Slider::LinearHorizontal, juce::Slider::TextBoxRight };
        juce::Label label;
        std::unique_ptr<SliderAttachment> attachment;
    };

    void timerCallback() override;
    void runMode (param::Mode mode);
    void addSlider (LabelledSlider& s, const char* id, const juce::String& name);
    juce::File latestResult() const;

    Processor& processor;
    juce::Label status, engineLabel, resultLabel;
    double progress = 0.0;
    juce::ProgressBar progressBar { progress };
    juce::TextEditor prompt;
    juce::TextButton startButton { "Start engine" }, cancelButton { "Cancel" }, newSeedButton { "New seed" };
    juce::ToggleButton captureButton { "Capture" };
    std::array<juce::TextButton, 4> modeButtons;
    juce::ComboBox abBox, clockBox;
    LabelledSlider startBar, bars, seed, dryWet, variation, tempo;
    std::unique_ptr<ButtonAttachment> captureAttachment;
    std::unique_ptr<ComboAttachment> abAttachment, clockAttachment;
};
}
