#include "plugin/PluginEditor.h"

namespace sa3
{
Editor::Editor (Processor& p) : juce::AudioProcessorEditor (p), processor (p)
{
    addAndMakeVisible (status);
    addAndMakeVisible (engineLabel);
    addAndMakeVisible (progressBar);
    addAndMakeVisible (resultLabel);
    resultLabel.setTooltip ("Drag the newest result onto a track");
    resultLabel.setInterceptsMouseClicks (false, false);

    prompt.setMultiLine (true);
    prompt.setReturnKeyStartsNewLine (false);
    prompt.setText (processor.state.text().prompt, false);
    prompt.onTextChange = [this] {
        auto text = processor.state.text();
        text.prompt = prompt.getText();
        processor.state.setText (text);
    };
    addAndMakeVisible (prompt);

    for (size_t i = 0; i < modeButtons.size(); ++i)
    {
        modeButtons[i].setButtonText (param::modeNames[static_cast<int> (i)]);
        modeButtons[i].onClick = [this, i] { runMode (static_cast<param::Mode> (i)); };
        addAndMakeVisible (modeButtons[i]);
    }
    startButton.onClick = [this] { processor.engine().request (Action::startEngine); };
    cancelButton.onClick = [this] { processor.engine().request (Action::cancel); };
    newSeedButton.onClick = [this] { processor.engine().request (Action::newSeed); };
    for (auto* b : { &startButton, &cancelButton, &newSeedButton })
        addAndMakeVisible (*b);
    addAndMakeVisible (captureButton);
    captureAttachment = std::make_unique<ButtonAttachment> (processor.parameters, param::capture, captureButton);

    abBox.addItemList ({ "A: original", "B: generated" }, 1);
    clockBox.addItemList ({ "Host playhead", "Plugin clock" }, 1);
    addAndMakeVisible (abBox);
    addAndMakeVisible (clockBox);
    abAttachment = std::make_unique<ComboAttachment> (processor.parameters, param::ab, abBox);
    clockAttachment = std::make_unique<ComboAttachment> (processor.parameters, param::clock, clockBox);

    addSlider (startBar, param::startBar, "Start bar");
    addSlider (bars, param::bars, "Bars");
    addSlider (seed, param::seed, "Seed");
    addSlider (dryWet, param::dryWet, "Dry/wet");
    addSlider (variation, param::variationAmount, "Variation");
    addSlider (tempo, param::tempo, "Clock tempo");

    setSize (560, 440);
    startTimerHz (10);
}

Editor::~Editor()
{
    stopTimer();
}

void Editor::addSlider (LabelledSlider& s, const char* id, const juce::String& name)
{
    s.label.setText (name, juce::dontSendNotification);
    s.attachment = std::make_unique<SliderAttachment> (processor.parameters, id, s.slider);
    addAndMakeVisible (s.label);
    addAndMakeVisible (s.slider);
}

void Editor::runMode (param::Mode mode)
{
    if (auto* p = processor.parameters.getParameter (param::mode))
        p->setValueNotifyingHost (p->convertTo0to1 (static_cast<float> (static_cast<int> (mode))));
    processor.engine().request (Action::run);
}

juce::File Editor::latestResult() const
{
    const auto results = processor.state.text().results;
    return results.isEmpty() ? juce::File() : juce::File (results[results.size() - 1]);
}

void Editor::timerCallback()
{
    const auto notice = processor.state.notice();
    status.setText (processor.state.status() + (notice.isEmpty() ? "" : "  |  " + notice), juce::dontSendNotification);
    engineLabel.setText ("Engine: " + processor.state.engine(), juce::dontSendNotification);
    if (auto* p = processor.parameters.getRawParameterValue (param::progress))
        progress = p->load();
    const auto result = latestResult();
    resultLabel.setText (result == juce::File() ? "No result yet" : "Drag onto a track: " + result.getFileName(),
                         juce::dontSendNotification);
}

void Editor::mouseDrag (const juce::MouseEvent& event)
{
    const auto result = latestResult();
    if (resultLabel.getBounds().contains (event.getPosition()) && result.existsAsFile())
        performExternalDragDropOfFiles ({ result.getFullPathName() }, false);
}

void Editor::paint (juce::Graphics& g)
{
    g.fillAll (getLookAndFeel().findColour (juce::ResizableWindow::backgroundColourId));
}

void Editor::resized()
{
    auto area = getLocalBounds().reduced (8);
    status.setBounds (area.removeFromTop (24));
    engineLabel.setBounds (area.removeFromTop (20));
    progressBar.setBounds (area.removeFromTop (18));
    area.removeFromTop (6);
    prompt.setBounds (area.removeFromTop (54));
    area.removeFromTop (6);

    auto row = area.removeFromTop (28);
    const int modeWidth = row.getWidth() / static_cast<int> (modeButtons.size());
    for (auto& b : modeButtons)
        b.setBounds (row.removeFromLeft (modeWidth).reduced (2));
    row = area.removeFromTop (28);
    for (juce::Component* c : { static_cast<juce::Component*> (&captureButton), static_cast<juce::Component*> (&cancelButton),
                                static_cast<juce::Component*> (&newSeedButton), static_cast<juce::Component*> (&startButton) })
        c->setBounds (row.removeFromLeft (modeWidth).reduced (2));
    row = area.removeFromTop (28);
    abBox.setBounds (row.removeFromLeft (row.getWidth() / 2).reduced (2));
    clockBox.setBounds (row.reduced (2));

    for (auto* s : { &startBar, &bars, &seed, &dryWet, &variation, &tempo })
    {
        auto line = area.removeFromTop (26);
        s->label.setBounds (line.removeFromLeft (100));
        s->slider.setBounds (line);
    }
    resultLabel.setBounds (area.removeFromTop (28));
}
}
