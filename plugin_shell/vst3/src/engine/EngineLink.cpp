#include "engine/EngineLink.h"

#include "protocol/MessageTypes.h"

#include <zmq.h>

#include <cstring>

namespace sa3::engine
{
namespace
{
    void* newSocket (void* context, int type)
    {
        void* socket = zmq_socket (context, type);
        int linger = 0;
        zmq_setsockopt (socket, ZMQ_LINGER, &linger, sizeof (linger));
        return socket;
    }

    juce::int64 intOr (const juce::var& map, const char* name, juce::int64 fallback)
    {
        const auto& v = map.getProperty (name, {});
        return (v.isInt() || v.isInt64()) ? static_cast<juce::int64> (v) : fallback;
    }
}

EngineLink::EngineLink() = default;

EngineLink::~EngineLink()
{
    close();
}

void EngineLink::close()
{
    if (monitor != nullptr)
    {
        zmq_socket_monitor (dealer, nullptr, 0);
        zmq_close (monitor);
        monitor = nullptr;
    }
    for (auto** socket : { &dealer, &sub })
        if (*socket != nullptr)
        {
            zmq_close (*socket);
            *socket = nullptr;
        }
    if (context != nullptr)
    {
        zmq_ctx_term (context);
        context = nullptr;
    }
}

juce::var EngineLink::open (const ConnectionInfo& info, const std::string& session, juce::int64 maxReplyBytes, int timeoutMs)
{
    close();
    key = info.key;
    sessionId = session;
    endpoint = info.requestEndpoint;
    publicKey = info.curve.publicKey;
    context = zmq_ctx_new();
    dealer = newSocket (context, ZMQ_DEALER);
    sub = newSocket (context, ZMQ_SUB);
    if (info.curve.enabled())
    {
        if (! zmq_has ("curve"))
        {
            close();
            throw LinkError ("This engine needs CURVE encryption, and the ZeroMQ library the plugin uses has no CURVE support");
        }
        secure (dealer, info);
        secure (sub, info);
        watchHandshake();
    }
    zmq_setsockopt (dealer, ZMQ_MAXMSGSIZE, &maxReplyBytes, sizeof (maxReplyBytes));
    zmq_setsockopt (sub, ZMQ_SUBSCRIBE, session.data(), session.size());
    if (zmq_connect (sub, info.eventEndpoint.c_str()) != 0 || zmq_connect (dealer, info.requestEndpoint.c_str()) != 0)
    {
        close();
        throw LinkError ("Cannot connect to the engine at " + info.requestEndpoint + ": " + zmq_strerror (zmq_errno()));
    }

    // Until our welcome arrives, events for this session could be lost (the PUB/SUB slow joiner).
    const auto deadline = juce::Time::getMillisecondCounter() + static_cast<juce::uint32> (timeoutMs);
    for (;;)
    {
        const auto now = juce::Time::getMillisecondCounter();
        if (now >= deadline)
        {
            close();
            throw LinkError ("The engine does not answer (no welcome on its event socket)");
        }
        auto incoming = receive (std::min (50, static_cast<int> (deadline - now)));  // short: handshake news
        if (incoming && incoming->isEvent && incoming->message.header.msgType == proto::event::welcome
            && incoming->message.content.getProperty ("topic", {}).toString().toStdString() == session)
            break;
    }

    auto hello = proto::newMap();
    hello.getDynamicObject()->setProperty ("client", "sa3-vst3");
    hello.getDynamicObject()->setProperty ("max_message_bytes", maxReplyBytes);
    auto reply = call (proto::request::hello, hello, timeoutMs);
    if (reply.content.getProperty ("status", {}).toString() != "ok")
    {
        close();
        throw LinkError ("The engine refused hello: " + reply.content.getProperty ("message", {}).toString().toStdString());
    }
    const auto limits = reply.content.getProperty ("limits", {});
    maxMessageBytes = intOr (limits, "max_message_bytes", maxMessageBytes);
    maxPartBytes = intOr (limits, "max_part_bytes", maxPartBytes);
    maxBuffers = intOr (limits, "max_buffers", maxBuffers);
    return reply.content;
}

void EngineLink::secure (void* socket, const ConnectionInfo& info)
{
    const auto& k = info.curve;
    bool ok = true;
    // Z85 text with its terminating NUL (41 bytes), as zmq_setsockopt takes a key in text form
    for (const auto& [option, value] : { std::pair { ZMQ_CURVE_SERVERKEY, &k.serverKey },
                                         std::pair { ZMQ_CURVE_PUBLICKEY, &k.publicKey },
                                         std::pair { ZMQ_CURVE_SECRETKEY, &k.secretKey } })
        ok = ok && zmq_setsockopt (socket, option, value->c_str(), value->size() + 1) == 0;
    if (info.remote)  // a network between: notice dead peers, back off reconnecting (bridge/curve.py)
    {
        const int heartbeat = 5000, heartbeatTimeout = 20000, keepalive = 1, reconnectMax = 5000;
        zmq_setsockopt (socket, ZMQ_HEARTBEAT_IVL, &heartbeat, sizeof (heartbeat));
        zmq_setsockopt (socket, ZMQ_HEARTBEAT_TIMEOUT, &heartbeatTimeout, sizeof (heartbeatTimeout));
        zmq_setsockopt (socket, ZMQ_TCP_KEEPALIVE, &keepalive, sizeof (keepalive));
        zmq_setsockopt (socket, ZMQ_RECONNECT_IVL_MAX, &reconnectMax, sizeof (reconnectMax));
    }
    if (! ok)
    {
        close();
        throw LinkError (std::string ("Cannot use the CURVE keys of the connection file: ") + zmq_strerror (zmq_errno()));
    }
}

void EngineLink::watchHandshake()
{
    static std::atomic<int> monitors { 0 };
    const auto address = "inproc://sa3-handshake-" + std::to_string (++monitors);
    zmq_socket_monitor (dealer, address.c_str(),
                        ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL
                            | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
    monitor = newSocket (context, ZMQ_PAIR);
    zmq_connect (monitor, address.c_str());
}

void EngineLink::checkHandshake()
{
    while (monitor != nullptr)
    {
        zmq_msg_t part;
        zmq_msg_init (&part);
        if (zmq_msg_recv (&part, monitor, ZMQ_DONTWAIT) < 0)
        {
            zmq_msg_close (&part);
            return;
        }
        std::uint16_t event = 0;
        std::uint32_t value = 0;
        if (zmq_msg_size (&part) >= 6)
        {
            std::memcpy (&event, zmq_msg_data (&part), sizeof (event));
            std::memcpy (&value, static_cast<const char*> (zmq_msg_data (&part)) + 2, sizeof (value));
        }
        const bool more = zmq_msg_more (&part) != 0;
        zmq_msg_close (&part);
        if (more)  // the endpoint's address
        {
            zmq_msg_init (&part);
            zmq_msg_recv (&part, monitor, 0);
            zmq_msg_close (&part);
        }
        const auto where = endpoint, key = publicKey;
        if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
        {
            close();
            throw LinkError ("The engine at " + where + " refused this plugin: its key " + key
                             + " is not on the engine's allow-list (CURVE authentication failed, status " + std::to_string (value)
                             + "). Pair it on the engine machine: sa3 engine pair --client-key " + key);
        }
        if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL || event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
        {
            close();
            throw LinkError ("The secure (CURVE) handshake with the engine at " + where
                             + " failed: the engine key in the connection file is not this engine's, or it does not use CURVE. Pair again.");
        }
    }
}

std::string EngineLink::send (const std::string& msgType, const juce::var& content, const proto::Frames& buffers)
{
    if (! isOpen())
        throw LinkError ("Not connected to an engine");
    proto::Message message { proto::Header::make (msgType, sessionId), std::nullopt, content, buffers };
    const auto frames = proto::encode (message, key);

    juce::int64 total = 0;
    for (size_t i = 1; i < frames.size(); ++i)
    {
        total += static_cast<juce::int64> (frames[i].size());
        if (i >= 2 && i <= 4 && static_cast<juce::int64> (frames[i].size()) > maxPartBytes)
            throw LinkError ("The request is too large for the engine (a part over " + std::to_string (maxPartBytes) + " bytes)");
    }
    if (total > maxMessageBytes || static_cast<juce::int64> (buffers.size()) > maxBuffers)
        throw LinkError ("The audio is too large to send to the engine (" + std::to_string (total / (1 << 20))
                         + " MiB; its limit is " + std::to_string (maxMessageBytes / (1 << 20)) + " MiB)");
    sendFrames (frames);
    return message.header.msgId;
}

void EngineLink::sendFrames (const proto::Frames& frames)
{
    for (size_t i = 0; i < frames.size(); ++i)
        if (zmq_send (dealer, frames[i].data(), frames[i].size(), i + 1 < frames.size() ? ZMQ_SNDMORE : 0) < 0)
            throw LinkError (std::string ("Cannot send to the engine: ") + zmq_strerror (zmq_errno()));
}

proto::Frames EngineLink::receiveFrames (void* socket)
{
    proto::Frames frames;
    for (;;)
    {
        zmq_msg_t part;
        zmq_msg_init (&part);
        if (zmq_msg_recv (&part, socket, 0) < 0)
        {
            zmq_msg_close (&part);
            throw LinkError (std::string ("Receiving from the engine failed: ") + zmq_strerror (zmq_errno()));
        }
        frames.emplace_back (static_cast<const char*> (zmq_msg_data (&part)), zmq_msg_size (&part));
        const bool more = zmq_msg_more (&part) != 0;
        zmq_msg_close (&part);
        if (! more)
            return frames;
    }
}

std::optional<Incoming> EngineLink::receive (int timeoutMs)
{
    if (! isOpen())
        throw LinkError ("Not connected to an engine");
    checkHandshake();
    zmq_pollitem_t items[] = { { dealer, 0, ZMQ_POLLIN, 0 }, { sub, 0, ZMQ_POLLIN, 0 } };
    if (zmq_poll (items, 2, timeoutMs) <= 0)
        return std::nullopt;
    const bool isEvent = (items[0].revents & ZMQ_POLLIN) == 0;
    auto frames = receiveFrames (isEvent ? sub : dealer);
    return Incoming { isEvent, proto::decode (frames, key) };
}

proto::Message EngineLink::call (const std::string& msgType, const juce::var& content, int timeoutMs)
{
    const auto id = send (msgType, content);
    const auto deadline = juce::Time::getMillisecondCounter() + static_cast<juce::uint32> (timeoutMs);
    for (auto now = juce::Time::getMillisecondCounter(); now < deadline; now = juce::Time::getMillisecondCounter())
    {
        auto incoming = receive (static_cast<int> (deadline - now));
        if (incoming && ! incoming->isEvent && incoming->message.parent && incoming->message.parent->msgId == id)
            return std::move (incoming->message);
    }
    close();
    throw LinkError ("The engine did not answer " + msgType + " in time");
}
}
