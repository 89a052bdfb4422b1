#pragma once
// The plugin's engine thread: finds and connects to the engine (reconnecting whenever it goes and
// comes back), turns the trigger parameters and editor buttons into jobs, follows their progress
// events, cancels, notices an engine that died mid-job, and takes finished captures off the audio
// thread. Everything that may block or allocate happens here, never on the audio thread.

#include "engine/EngineLink.h"
#include "plugin/Workflows.h"

namespace sa3
{
enum class Action { none = 0, run, newSeed, cancel, startEngine };

class EngineWorker : private juce::Thread
{
public:
    explicit EngineWorker (PluginContext& context);
    ~EngineWorker() override;

    /** Any thread: do `action` (as if its trigger parameter rose). */
    void request (Action action);
    /** Any thread: play the newest result in the state again (after a state restore), soon. */
    void restoreResults() { restorePending.store (true); }
    /** Not the audio thread: the same, now (reads the result file). */
    void restoreResultsNow();

private:
    void run() override;
    void step();  // one turn of the loop: may throw; run() reports it and carries on
    void pollTriggers();
    void perform (Action action);
    void connect();
    void pump();
    void checkLiveness();
    void submit (param::Mode mode, juce::int64 seed);
    void onReply (const proto::Message& reply);
    void onEvent (const proto::Message& event);
    void lose (const juce::String& why);

    PluginContext& ctx;
    engine::EngineLink link;
    engine::ConnectionInfo info;
    juce::File connectionPath;
    const std::string session = proto::newId();
    std::atomic<int> requested { 0 };
    std::atomic<bool> restorePending { false };
    bool lastRun = false, lastNewSeed = false, lastCancel = false, lastStart = false;

    std::unique_ptr<Captured> captured;
    std::optional<PendingJob> job;
    juce::uint32 nextConnect = 0, lastHeard = 0, lastLivenessCheck = 0, lastPing = 0;
    juce::String lastProblem;
    bool keepLossReport = false;
};
}
