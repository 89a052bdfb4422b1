#pragma once
// Finding the engine, exactly as bridge/connection.py does: the same path chain
// ($SA3_CONNECTION_FILE, $XDG_RUNTIME_DIR/sa3/engine.json, ~/.local/share/sa3/runtime/engine.json),
// the same refusals (not this user's, or readable by others), the same liveness test (the engine's
// flock on <file>.lock; else its pid).

#include <juce_core/juce_core.h>
#include <optional>
#include <string>

namespace sa3::engine
{
struct ConnectionInfo
{
    std::string transport, requestEndpoint, eventEndpoint, key, hostname, protocolVersion;
    juce::int64 pid = 0;
};

juce::File defaultConnectionPath();

struct Discovery
{
    std::optional<ConnectionInfo> info;
    std::string problem;  // for people, when there is no usable engine
};

/** Reads and checks the file; `problem` says why there is no engine to connect to. */
Discovery discover (const juce::File& path);

enum class Liveness { running, stale, unknown };

/** Whether the engine that wrote `path` still runs (its lock is held; without a lock file, its pid). */
Liveness engineLiveness (const juce::File& path, const ConnectionInfo& info);
}
