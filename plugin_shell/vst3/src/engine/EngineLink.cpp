#include "engine/EngineLink.h"

#include "protocol/MessageTypes.h"

#include <zmq.h>

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
    context = zmq_ctx_new();
    dealer = newSocket (context, ZMQ_DEALER);
    sub = newSocket (context, ZMQ_SUB);
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
        auto incoming = receive (static_cast<int> (deadline - now));
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
