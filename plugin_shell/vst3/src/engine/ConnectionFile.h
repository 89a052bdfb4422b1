#pragma once
// Finding the engine, exactly as bridge/connection.py does: the same path chain
// ($SA3_CONNECTION_FILE, $XDG_RUNTIME_DIR/sa3/engine.json, ~/.local/share/sa3/runtime/engine.json),
// the same refusals (not this user's, or readable by others), the same liveness test (the engine's
// flock on <file>.lock; else its pid). A remote engine (`remote`: on another machine, reached over
// CurveZMQ with the keys the file names) has no lock or pid to check here.

#include <juce_core/juce_core.h>
#include <optional>
#include <string>

namespace sa3::engine
{
// The client side of CurveZMQ for an engine on another machine (docs/remote.md), as bridge/curve.py
// does it: the connection file names the engine's public key (`curve_serverkey`) and this client's
// keypair, either whole (`curve_publickey` + `curve_secretkey`) or by its public key alone, the secret
// then staying in this machine's `client-key.json` ({"public", "secret"}, mode 0600) in the key folder:
// $SA3_KEYS_DIR, else $XDG_CONFIG_HOME/sa3, else ~/.config/sa3. Keys are Z85 text, 40 characters.
struct CurveKeys
{
    std::string serverKey, publicKey, secretKey;  // empty serverKey: no CURVE (a local engine)
    bool enabled() const { return ! serverKey.empty(); }
};

juce::File keysDir();

/** The keys `json` (a connection file) calls for, filled into `keys`; a problem for people, or empty. */
std::string curveKeysOf (const juce::var& json, CurveKeys& keys);

/** Whether `key` is a 40-character Z85 key of 32 bytes. */
bool isCurveKey (const std::string& key);

struct ConnectionInfo
{
    std::string transport, requestEndpoint, eventEndpoint, key, hostname, protocolVersion;
    juce::int64 pid = 0;
    bool remote = false;  // on another machine: no shared disk, a network between
    CurveKeys curve;
};

juce::File defaultConnectionPath();

/** Why a file holding a key must not be used (another user's, or others may read it), or empty. */
std::string privateFileProblem (const juce::File& path);

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
