#include "plugin/EngineWorker.h"

#include "engine/ConnectionFile.h"
#include "plugin/EngineStarter.h"
#include "protocol/MessageTypes.h"

namespace sa3
{
namespace
{
    constexpr int tickMs = 20;
    constexpr juce::uint32 reconnectMs = 1000, livenessMs = 1000, pingAfterMs = 2000, silenceLimitMs = 10000;
    constexpr int openTimeoutMs = 3000;
    // a remote engine (over a network, CURVE): more time to open and before silence means it is gone
    constexpr int remoteOpenTimeoutMs = 15000;
    constexpr juce::uint32 remoteSilenceLimitMs = 30000;

    /** hello's `device` ({"device": "cuda:0", "name": "NVIDIA ...", ...}) in a few words. */
    juce::String describeDevice (const juce::var& device)
    {
        const auto name = device.getProperty ("name", {}).toString();
        return device.getProperty ("device", "unknown").toString() + (name.isEmpty() ? "" : " (" + name + ")");
    }

    juce::String engineWhere (const engine::ConnectionInfo& info)
    {
        return juce::String (info.requestEndpoint) + (info.remote ? " (remote" : " (local")
               + (info.curve.enabled() ? ", CURVE)" : ")");
    }

    constexpr juce::int64 maxReplyBytes = 128LL << 20;  // ~6 minutes of stereo float at 44.1 kHz

    juce::uint32 now()
    {
        return juce::Time::getMillisecondCounter();
    }

    juce::String describeError (const juce::var& content)
    {
        const auto code = content.getProperty ("code", {}).toString();
        const auto message = content.getProperty ("message", {}).toString();
        if (code == "too_large")
            return "The result is too large for the plugin to receive (" + message + "). Choose fewer bars.";
        if (code == "busy")
            return "The engine is busy with other jobs: try again in a moment.";
        if (code == "unknown_model")
            return "The engine does not have that model: " + message;
        return "The engine could not do it (" + code + "): " + message;
    }

    float progressOf (const juce::var& content)
    {
        const auto stage = content.getProperty ("stage", {}).toString();
        const double i = content.getProperty ("i", 0), n = content.getProperty ("n", 1);
        const double within = n > 0 ? i / n : 0.0;
        if (stage == "encode")
            return static_cast<float> (0.1 * within);
        if (stage == "decode")
            return static_cast<float> (0.9 + 0.1 * within);
        return static_cast<float> (0.1 + 0.8 * within);
    }
}

EngineWorker::EngineWorker (PluginContext& context) : juce::Thread ("SA3 engine"), ctx (context)
{
    startThread();
}

EngineWorker::~EngineWorker()
{
    stopThread (4000);
}

void EngineWorker::request (Action action)
{
    requested.store (static_cast<int> (action));
}

void EngineWorker::run()
{
    ctx.report (param::Status::connecting, "Looking for the engine...");
    while (! threadShouldExit())
    {
        try
        {
            step();
        }
        catch (const std::exception& e)  // never let a failure take the host down
        {
            lose (juce::String ("Unexpected failure: ") + e.what());
            wait (tickMs);
        }
    }
    link.close();
}

void EngineWorker::step()
{
    reapStartedEngines();
    ctx.playback.collectGarbage();
    if (restorePending.exchange (false))
        restoreResultsNow();

    if (auto fresh = std::make_unique<Captured>(); ctx.capture.take (*fresh))
    {
        captured = std::move (fresh);
        ctx.report (link.isOpen() ? param::Status::ready : param::Status::noEngine,
                    "Captured " + juce::String (static_cast<double> (captured->frames) / captured->sampleRate, 2) + " s");
    }
    else if (ctx.capture.state() == CaptureBuffer::overflow)
        ctx.report (param::Status::error, "The capture is longer than the plugin can hold: capture fewer bars.");

    pollTriggers();
    if (auto action = static_cast<Action> (requested.exchange (0)); action != Action::none)
        perform (action);

    if (! link.isOpen())
    {
        if (now() >= nextConnect)
            connect();
        wait (tickMs);
        return;
    }
    pump();
    checkLiveness();
}

void EngineWorker::restoreResultsNow()
{
    const auto problem = restoreLatestResult (ctx);
    ctx.state.setNotice (problem);
    if (problem.isNotEmpty())
        ctx.report (param::Status::error, problem);
}

void EngineWorker::pollTriggers()
{
    const auto& v = ctx.values;
    const std::pair<std::atomic<float>*, std::pair<bool*, Action>> triggers[] = {
        { v.run, { &lastRun, Action::run } },
        { v.newSeed, { &lastNewSeed, Action::newSeed } },
        { v.cancel, { &lastCancel, Action::cancel } },
        { v.startEngine, { &lastStart, Action::startEngine } },
    };
    for (const auto& [parameter, edge] : triggers)
    {
        const bool on = v.on (parameter);
        if (on && ! *edge.first)
            perform (edge.second);
        *edge.first = on;
    }
}

void EngineWorker::perform (Action action)
{
    const auto& v = ctx.values;
    const auto mode = static_cast<param::Mode> (juce::jlimit (0, 3, static_cast<int> (v.get (v.mode) + 0.5f)));
    switch (action)
    {
        case Action::run:
            submit (mode, static_cast<juce::int64> (v.get (v.seed)));
            break;
        case Action::newSeed:
        {
            const auto seed = juce::Random::getSystemRandom().nextInt (1000000);
            ctx.setParameter (param::seed, static_cast<float> (seed));
            submit (mode, seed);
            break;
        }
        case Action::cancel:
            if (job && link.isOpen())
            {
                auto content = proto::newMap();
                content.getDynamicObject()->setProperty ("request_id", juce::String (job->requestId));
                link.send (proto::request::cancel, content);
                ctx.report (param::Status::working, "Cancelling...");
            }
            break;
        case Action::startEngine:
        {
            const auto text = ctx.state.text();
            const auto problem = startEngine (text.python, text.model, engine::defaultConnectionPath());
            ctx.report (problem.isEmpty() ? param::Status::connecting : param::Status::error,
                        problem.isEmpty() ? "Starting the engine (the first start can take a minute)..." : problem);
            nextConnect = now();
            break;
        }
        case Action::none:
        default: break;
    }
}

void EngineWorker::connect()
{
    nextConnect = now() + reconnectMs;
    connectionPath = engine::defaultConnectionPath();
    const auto found = engine::discover (connectionPath);
    juce::String problem = found.problem;
    if (found.info && engine::engineLiveness (connectionPath, *found.info) == engine::Liveness::stale)
        problem = "No engine is running (the connection file " + connectionPath.getFullPathName()
                  + " is left from one that stopped). Start one with `sa3 serve` or the Start engine button.";
    if (found.info)
        ctx.state.setEngine (engineWhere (*found.info) + ", not connected");
    if (problem.isEmpty())
    {
        try
        {
            const auto remote = found.info->remote;
            const auto hello = link.open (*found.info, session, maxReplyBytes, remote ? remoteOpenTimeoutMs : openTimeoutMs);
            info = *found.info;
            lastHeard = lastLivenessCheck = now();
            const auto device = describeDevice (hello.getProperty ("device", {}));
            ctx.state.setEngine (engineWhere (info) + ", device " + device);
            ctx.report (param::Status::ready, remote ? "Connected to the remote engine at " + juce::String (info.requestEndpoint)
                                                     : "Connected to the engine (pid " + juce::String (info.pid) + ")");
            lastProblem = {};
            keepLossReport = false;
            return;
        }
        catch (const proto::EnvelopeError& e)
        {
            link.close();
            problem = "The engine's messages fail verification (" + juce::String (e.code) + "): the key in "
                      + connectionPath.getFullPathName() + " is not the engine's. Restart the engine.";
        }
        catch (const std::exception& e)
        {
            link.close();
            problem = e.what();
        }
    }
    if (problem != lastProblem && ! keepLossReport)  // do not flood the host with the same status
    {
        ctx.report (found.info ? param::Status::error : param::Status::noEngine, problem);
        lastProblem = problem;
    }
}

void EngineWorker::submit (param::Mode mode, juce::int64 seed)
{
    if (job)
        return ctx.report (param::Status::working, "A job is running: cancel it first.");
    if (! link.isOpen())
        return ctx.report (param::Status::noEngine, "No engine: start one with `sa3 serve` or the Start engine button.");
    juce::String whyNot;
    auto prepared = prepareJob (ctx, mode, captured.get(), seed, whyNot);
    if (! prepared)
        return ctx.report (param::Status::error, whyNot);
    proto::Frames buffers;
    try
    {
        const auto content = requestContent (prepared->spec, buffers);
        prepared->pending.msgId = link.send (requestType (mode), content, buffers);
    }
    catch (const std::exception& e)
    {
        return ctx.report (param::Status::error, e.what());
    }
    job = prepared->pending;
    ctx.reportProgress (0.0f);
    ctx.report (param::Status::working, param::modeNames[static_cast<int> (mode)] + ": sent to the engine");
}

void EngineWorker::pump()
{
    try
    {
        for (auto incoming = link.receive (tickMs); incoming; incoming = link.receive (0))
        {
            lastHeard = now();
            if (incoming->isEvent)
                onEvent (incoming->message);
            else
                onReply (incoming->message);
        }
    }
    catch (const proto::EnvelopeError& e)
    {
        lose ("A message from the engine failed verification (" + juce::String (e.code) + "): " + e.what());
    }
    catch (const std::exception& e)
    {
        lose (e.what());
    }
}

void EngineWorker::onEvent (const proto::Message& event)
{
    if (! job || event.content.getProperty ("request_id", {}).toString().toStdString() != job->requestId)
        return;
    if (event.header.msgType == proto::event::progress)
    {
        ctx.reportProgress (progressOf (event.content));
        ctx.report (param::Status::working, param::modeNames[static_cast<int> (job->mode)] + ": "
                                                + event.content.getProperty ("stage", {}).toString() + " "
                                                + event.content.getProperty ("i", {}).toString() + "/"
                                                + event.content.getProperty ("n", {}).toString());
    }
}

void EngineWorker::onReply (const proto::Message& reply)
{
    if (! job || ! reply.parent || reply.parent->msgId != job->msgId)
        return;  // a ping's or cancel's reply
    const auto finished = *job;
    job.reset();
    ctx.reportProgress (1.0f);
    if (reply.content.getProperty ("status", {}).toString() != "ok")
    {
        if (reply.content.getProperty ("code", {}).toString() == "cancelled")
            return ctx.report (param::Status::ready, "Cancelled");
        return ctx.report (param::Status::error, describeError (reply.content));
    }
    try
    {
        ctx.report (param::Status::done, finishJob (ctx, finished, reply.content, reply.buffers));
    }
    catch (const std::exception& e)
    {
        ctx.report (param::Status::error, juce::String ("The result could not be used: ") + e.what());
    }
}

void EngineWorker::checkLiveness()
{
    const auto t = now();
    if (t - lastLivenessCheck >= livenessMs)
    {
        lastLivenessCheck = t;
        if (engine::engineLiveness (connectionPath, info) == engine::Liveness::stale)
            return lose ("The engine stopped");
    }
    if (t - lastHeard >= (info.remote ? remoteSilenceLimitMs : silenceLimitMs))
        return lose ("The engine stopped answering");
    if (t - lastHeard >= pingAfterMs && t - lastPing >= pingAfterMs)
    {
        lastPing = t;
        try
        {
            link.send (proto::request::ping, proto::newMap());
        }
        catch (const std::exception& e)
        {
            lose (e.what());
        }
    }
}

void EngineWorker::lose (const juce::String& why)
{
    link.close();
    nextConnect = now() + reconnectMs;
    lastProblem = {};
    const bool midJob = job.has_value();
    keepLossReport = midJob;  // shown until an engine is back, not replaced by "no engine"
    job.reset();
    ctx.reportProgress (0.0f);
    ctx.report (param::Status::error, why + (midJob ? " during the job; the job is lost. " : ". ")
                                          + "Audio keeps passing; the plugin reconnects when an engine runs again.");
}
}
