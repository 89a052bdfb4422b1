#include "plugin/Workflows.h"

#include "plugin/ResultFiles.h"
#include "protocol/AudioMap.h"

namespace sa3
{
namespace
{
    constexpr double epsilon = 1e-9;

    /** The host sample of quarter-note position `q` inside a capture. */
    juce::int64 captureSampleOf (const PluginContext& ctx, const MeterMap& meters, const Captured& c, double q)
    {
        const int bar = meters.barAt (q);
        if (std::abs (meters.ppqOfBar (bar) - q) < epsilon)
            if (const auto learned = ctx.bars.sampleOf (bar); learned != BarMap::unknown)
                return learned;
        return c.startSample + static_cast<juce::int64> (std::floor ((q - c.startPpq) * 60.0 / c.bpmAtEnd * c.sampleRate + 0.5));
    }

    std::unique_ptr<Take> takeAtHostRate (const proto::PlanarAudio& audio, double hostRate)
    {
        auto take = std::make_unique<Take>();
        take->channels = audio.channels;
        if (static_cast<double> (audio.sampleRate) == hostRate)
        {
            take->frames = audio.frames;
            take->samples = audio.samples;
        }
        else
        {
            const double ratio = audio.sampleRate / hostRate;
            take->frames = static_cast<juce::int64> (std::floor (audio.frames / ratio + 0.5));
            take->samples.assign (static_cast<size_t> (take->frames) * static_cast<size_t> (audio.channels), 0.0f);
            for (int c = 0; c < audio.channels; ++c)
            {
                juce::WindowedSincInterpolator interpolator;
                std::vector<float> padded (audio.channel (c), audio.channel (c) + audio.frames);
                padded.resize (padded.size() + 64, 0.0f);  // the interpolator reads ahead
                interpolator.process (ratio, padded.data(), take->samples.data() + c * take->frames,
                                      static_cast<int> (take->frames));
            }
        }
        for (auto& s : take->samples)
            if (! std::isfinite (s))
                s = 0.0f;
        return take;
    }

    proto::PlanarAudio planar (const Take& take, double hostRate)
    {
        proto::PlanarAudio audio;
        audio.sampleRate = static_cast<int> (hostRate);
        audio.channels = take.channels;
        audio.frames = take.frames;
        audio.samples = take.samples;
        return audio;
    }

    juce::String stemFor (param::Mode mode)
    {
        static const char* stems[] = { "loop", "inpaint", "extend", "variation" };
        return juce::String ("sa3-") + stems[static_cast<int> (mode)];
    }
}

std::optional<PreparedJob> prepareJob (PluginContext& ctx, param::Mode mode, const Captured* capture, juce::int64 seed,
                                       juce::String& whyNot)
{
    const auto& v = ctx.values;
    const bool clock = v.get (v.clock) >= 0.5f;
    const bool known = ctx.timeline.known.load() && ctx.bars.meters().known();
    const double bpm = known ? ctx.timeline.bpm.load() : (clock ? v.get (v.tempo) : 120.0);
    MeterMap assumed;  // nothing played yet: the plugin clock's meter
    assumed.reset (static_cast<int> (v.get (v.meterNum)), v.meterDenominator());
    const MeterMap& meters = known ? ctx.bars.meters() : assumed;
    const double rate = ctx.sampleRate.load();
    const auto range = rangeOf (meters, ctx.timeline.hasLoop.load(), ctx.timeline.loopStartPpq.load(),
                                ctx.timeline.loopEndPpq.load(), v);
    const int num = meters.numeratorOfBar (range.firstBar), den = meters.denominatorOfBar (range.firstBar);
    const auto text = ctx.state.text();

    PreparedJob job;
    job.spec.mode = mode;
    job.spec.requestId = "vst3-" + proto::newId();
    job.spec.model = text.model;
    job.spec.seed = seed;
    job.spec.source = capture;
    job.pending.requestId = job.spec.requestId;
    job.pending.mode = mode;

    int promptBars = range.bars;
    if (mode == param::Mode::loop)
    {
        job.spec.seconds = static_cast<double> (ctx.bars.lengthOf (range.firstBar, range.bars, bpm, rate)) / rate;
        job.pending.anchorPpq = range.startPpq;
        job.pending.anchorSample = ctx.bars.sampleOf (range.firstBar);
    }
    else
    {
        if (capture == nullptr || capture->frames == 0)
        {
            whyNot = "Nothing captured yet: turn Capture on and play the range first.";
            return std::nullopt;
        }
        job.pending.anchorPpq = capture->startPpq;
        job.pending.anchorSample = capture->startSample;
        const double captureRate = capture->sampleRate;
        if (mode == param::Mode::inpaint)
        {
            const auto from = captureSampleOf (ctx, meters, *capture, range.startPpq) - capture->startSample;
            const auto to = captureSampleOf (ctx, meters, *capture, range.endPpq) - capture->startSample;
            if (from < 0 || to > capture->frames || to <= from)
            {
                whyNot = "The range (bars " + juce::String (range.firstBar + 1) + "-" + juce::String (range.firstBar + range.bars)
                         + ") is not inside the captured audio: capture a range that contains it.";
                return std::nullopt;
            }
            job.spec.maskStart = static_cast<double> (from) / captureRate;
            job.spec.maskEnd = static_cast<double> (to) / captureRate;
        }
        else if (mode == param::Mode::extend)
        {
            const int endBar = meters.barAt (capture->endPpq);
            const auto more = ctx.bars.lengthOf (endBar, range.bars, capture->bpmAtEnd, captureRate);
            job.spec.seconds = static_cast<double> (capture->frames + more) / captureRate;
        }
        else
        {
            job.spec.variationAmount = v.get (v.variationAmount);
            promptBars = meters.barAt (capture->endPpq) - meters.barAt (capture->startPpq);
        }
    }
    job.spec.prompt = fillPrompt (text, bpm, num, den, promptBars);

    auto sidecar = proto::newMap();
    auto* o = sidecar.getDynamicObject();
    o->setProperty ("mode", param::modeNames[static_cast<int> (mode)]);
    o->setProperty ("request_id", juce::String (job.spec.requestId));
    o->setProperty ("prompt", job.spec.prompt);
    o->setProperty ("seed", seed);
    o->setProperty ("bpm", bpm);
    o->setProperty ("meter", juce::String (num) + "/" + juce::String (den));
    o->setProperty ("start_bar", range.firstBar + 1);
    o->setProperty ("bars", range.bars);
    o->setProperty ("anchor_ppq", job.pending.anchorPpq);
    o->setProperty ("host_sample_rate", rate);
    job.pending.sidecar = sidecar;
    return job;
}

juce::String finishJob (PluginContext& ctx, const PendingJob& job, const juce::var& content, const proto::Frames& buffers)
{
    const auto* results = content.getProperty ("results", {}).getArray();
    if (results == nullptr || results->isEmpty())
        throw std::runtime_error ("the engine's reply holds no result");
    const auto& result = results->getReference (0);
    const auto audio = proto::audioFromMap (result.getProperty ("audio", {}), buffers);
    const double hostRate = ctx.sampleRate.load();

    auto take = takeAtHostRate (audio, hostRate);
    take->anchorPpq = job.anchorPpq;
    take->anchorSample.store (job.anchorSample);
    const auto files = planar (*take, hostRate);
    ctx.playback.publish (std::move (take));

    auto sidecar = job.sidecar.clone();
    sidecar.getDynamicObject()->setProperty ("seed", result.getProperty ("seed", job.sidecar.getProperty ("seed", {})));
    sidecar.getDynamicObject()->setProperty ("anchor_sample", job.anchorSample == BarMap::unknown ? juce::var() : juce::var (job.anchorSample));
    sidecar.getDynamicObject()->setProperty ("engine_params", result.getProperty ("params", {}));
    const auto folder = juce::File (ctx.state.text().resultsFolder);
    const auto wav = results::write (folder, stemFor (job.mode), files, sidecar);
    ctx.state.addResult (wav.getFullPathName());
    return "Done: " + wav.getFileName() + " (seed " + result.getProperty ("seed", {}).toString() + ")";
}

juce::String restoreLatestResult (PluginContext& ctx)
{
    const auto text = ctx.state.text();
    if (text.results.isEmpty())
        return {};
    const juce::File wav (text.results[text.results.size() - 1]);
    const auto audio = results::readWav (wav);
    if (! audio)
        return "Result file missing or unreadable: " + wav.getFullPathName() + ". The rest of the session is fine.";
    const auto sidecar = results::readSidecar (wav);
    auto take = takeAtHostRate (*audio, ctx.sampleRate.load());
    take->anchorPpq = static_cast<double> (sidecar.getProperty ("anchor_ppq", 0.0));
    const auto anchor = sidecar.getProperty ("anchor_sample", {});
    const double savedRate = sidecar.getProperty ("host_sample_rate", ctx.sampleRate.load());
    if ((anchor.isInt() || anchor.isInt64()) && savedRate == ctx.sampleRate.load())
        take->anchorSample.store (static_cast<juce::int64> (anchor));
    ctx.playback.publish (std::move (take));
    return {};
}
}
