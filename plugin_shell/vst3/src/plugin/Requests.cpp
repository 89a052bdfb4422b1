#include "plugin/Requests.h"

#include "protocol/AudioMap.h"
#include "protocol/MessageTypes.h"

namespace sa3
{
const char* requestType (param::Mode mode)
{
    switch (mode)
    {
        case param::Mode::inpaint: return proto::request::inpaint;
        case param::Mode::extend: return proto::request::extend;
        case param::Mode::variation: return proto::request::variation;
        case param::Mode::loop:
        default: return proto::request::generate;
    }
}

juce::var requestContent (const JobSpec& job, proto::Frames& buffers)
{
    auto content = proto::newMap();
    auto* o = content.getDynamicObject();
    o->setProperty ("request_id", juce::String (job.requestId));
    o->setProperty ("prompt", job.prompt);
    o->setProperty ("seed", job.seed);
    if (job.model.isNotEmpty())
        o->setProperty ("model", job.model);

    if (job.mode == param::Mode::loop)
    {
        o->setProperty ("duration", job.seconds);
        return content;
    }

    jassert (job.source != nullptr);
    proto::PlanarAudio audio;
    audio.sampleRate = static_cast<int> (job.source->sampleRate);
    audio.channels = job.source->channels;
    audio.frames = job.source->frames;
    audio.samples = job.source->samples;
    buffers.emplace_back();
    o->setProperty ("audio", proto::audioMap (0, audio, buffers.back()));

    switch (job.mode)
    {
        case param::Mode::inpaint:
            o->setProperty ("mask_start", job.maskStart);
            o->setProperty ("mask_end", job.maskEnd);
            o->setProperty ("splice", true);  // outside the range: the capture, bit for bit
            break;
        case param::Mode::extend:
            o->setProperty ("duration", job.seconds);
            o->setProperty ("splice", true);
            break;
        case param::Mode::variation:
            o->setProperty (proto::field::variationAmount, job.variationAmount);
            break;
        case param::Mode::loop:
        default: break;
    }
    return content;
}
}
