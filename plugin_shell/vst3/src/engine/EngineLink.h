#pragma once
// One connection to an engine: a DEALER for requests and replies, a SUB on this client's session for
// events. Opening it waits for the session's `welcome` and sends `hello` (declaring the largest reply
// this client takes). Not thread-safe: one thread owns a link (the plugin's engine thread).
// With CURVE (a remote engine, docs/remote.md) both sockets carry the keys of the connection file, and
// a failed handshake (a key the engine does not admit, a wrong engine key) is reported at once as a
// LinkError instead of waiting for an answer that never comes.

#include "engine/ConnectionFile.h"
#include "protocol/Envelope.h"

#include <optional>
#include <stdexcept>

namespace sa3::engine
{
/** A failure of the connection, in words for the status line. */
struct LinkError : std::runtime_error
{
    using std::runtime_error::runtime_error;
};

struct Incoming
{
    bool isEvent = false;
    proto::Message message;
};

class EngineLink
{
public:
    EngineLink();
    ~EngineLink();
    EngineLink (const EngineLink&) = delete;
    EngineLink& operator= (const EngineLink&) = delete;

    /** Connects, waits for `welcome`, sends `hello`; returns hello's reply content. */
    juce::var open (const ConnectionInfo& info, const std::string& session, juce::int64 maxReplyBytes, int timeoutMs);
    void close();
    bool isOpen() const { return dealer != nullptr; }

    /** Sends a request; returns its msg_id. Refuses (LinkError) one over the engine's limits, since
        the engine would drop it without a reply. */
    std::string send (const std::string& msgType, const juce::var& content, const proto::Frames& buffers = {});

    /** The next reply or event within `timeoutMs`, or nothing. Messages that fail verification
        throw proto::EnvelopeError (a wrong key shows up here as bad_signature). */
    std::optional<Incoming> receive (int timeoutMs);

    /** Sends and waits for the reply to that request (events meanwhile are dropped). */
    proto::Message call (const std::string& msgType, const juce::var& content, int timeoutMs);

    const std::string& session() const { return sessionId; }

private:
    void sendFrames (const proto::Frames& frames);
    void secure (void* socket, const ConnectionInfo& info);
    void watchHandshake();
    /** Throws LinkError if the monitor reported a failed CURVE handshake. */
    void checkHandshake();
    static proto::Frames receiveFrames (void* socket);

    void* context = nullptr;
    void* dealer = nullptr;
    void* sub = nullptr;
    void* monitor = nullptr;  // CURVE handshake events of the dealer
    std::string key, sessionId, endpoint, publicKey;
    juce::int64 maxMessageBytes = 512LL << 20, maxPartBytes = 1LL << 20, maxBuffers = 64;
};
}
