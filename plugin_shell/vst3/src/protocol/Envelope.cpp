#include "protocol/Envelope.h"

#include "protocol/Hmac.h"
#include "protocol/MessageTypes.h"
#include "protocol/Msgpack.h"

#include <chrono>
#include <ctime>

namespace sa3::proto
{
namespace
{
    constexpr size_t signatureBytes = 64;
    constexpr size_t maxRoutingFrames = 8;
    const char* headerFields[] = { "msg_id", "msg_type", "session", "date", "version" };

    std::vector<Bytes> signedParts (const Frames& frames, size_t first)
    {
        std::vector<Bytes> parts;
        for (size_t i = first; i < frames.size(); ++i)
            parts.push_back ({ frames[i].data(), frames[i].size() });
        return parts;
    }
}

std::string nowRfc3339()
{
    const auto now = std::chrono::system_clock::now();
    const auto micros = std::chrono::duration_cast<std::chrono::microseconds> (now.time_since_epoch()).count() % 1000000;
    const std::time_t seconds = std::chrono::system_clock::to_time_t (now);
    std::tm utc {};
#if defined(_WIN32)
    gmtime_s (&utc, &seconds);
#else
    gmtime_r (&seconds, &utc);
#endif
    char text[64];
    std::snprintf (text, sizeof (text), "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", utc.tm_year + 1900, utc.tm_mon + 1,
                   utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, static_cast<int> (micros));
    return text;
}

std::string newId()
{
    return juce::Uuid().toString().toLowerCase().toStdString();
}

Header Header::make (const std::string& msgType, const std::string& session)
{
    return { newId(), msgType, session, nowRfc3339(), proto::version };
}

juce::var Header::toVar() const
{
    auto map = newMap();
    auto* o = map.getDynamicObject();
    o->setProperty ("msg_id", juce::String (msgId));
    o->setProperty ("msg_type", juce::String (msgType));
    o->setProperty ("session", juce::String (session));
    o->setProperty ("date", juce::String (date));
    o->setProperty ("version", juce::String (version));
    return map;
}

Header Header::fromVar (const juce::var& v, const char* name)
{
    auto* o = v.getDynamicObject();
    if (o == nullptr)
        throw EnvelopeError ("bad_request", std::string (name) + ": expected a map");
    std::string values[5];
    for (int i = 0; i < 5; ++i)
    {
        const auto& field = o->getProperty (headerFields[i]);
        if (! field.isString() || field.toString().isEmpty())
            throw EnvelopeError ("bad_request", std::string (name) + "." + headerFields[i] + ": expected a non-empty string");
        values[i] = field.toString().toStdString();
    }
    return { values[0], values[1], values[2], values[3], values[4] };
}

juce::var newMap()
{
    return juce::var (new juce::DynamicObject());
}

juce::DynamicObject& contentOf (Message& message)
{
    if (message.content.getDynamicObject() == nullptr)
        message.content = newMap();
    return *message.content.getDynamicObject();
}

Frames encode (const Message& message, const std::string& key)
{
    Frames frames { delimiter, "" };
    frames.push_back (packVar (message.header.toVar()));
    frames.push_back (packVar (message.parent ? message.parent->toVar() : newMap()));
    frames.push_back (packVar (message.content.getDynamicObject() != nullptr ? message.content : newMap()));
    for (const auto& buffer : message.buffers)
        frames.push_back (buffer);
    frames[1] = signParts (key, signedParts (frames, 2));
    return frames;
}

Message decode (const Frames& frames, const std::string& key)
{
    size_t start = 0;
    while (start < frames.size() && start <= maxRoutingFrames && frames[start] != delimiter)
        ++start;
    if (start >= frames.size() || frames[start] != delimiter)
        throw EnvelopeError ("bad_request", "no <SA3|MSG> delimiter");
    const size_t sig = start + 1;
    if (frames.size() < sig + 4)
        throw EnvelopeError ("bad_request", "expected signature, header, parent_header and content");

    const auto& signature = frames[sig];
    const auto expected = signParts (key, signedParts (frames, sig + 1));
    if (signature.size() != signatureBytes || ! equalInConstantTime (expected, signature.data(), signature.size()))
        throw EnvelopeError ("bad_signature", "the signature does not match: is the key the engine's?");

    Message message;
    message.header = Header::fromVar (unpackVar (frames[sig + 1].data(), frames[sig + 1].size(), "header"), "header");
    auto parent = unpackVar (frames[sig + 2].data(), frames[sig + 2].size(), "parent_header");
    if (auto* p = parent.getDynamicObject(); p != nullptr && p->getProperties().size() > 0)
        message.parent = Header::fromVar (parent, "parent_header");
    message.content = unpackVar (frames[sig + 3].data(), frames[sig + 3].size(), "content");
    if (message.content.getDynamicObject() == nullptr)
        throw EnvelopeError ("bad_request", "content: expected a map");
    message.buffers.assign (frames.begin() + static_cast<long> (sig + 4), frames.end());
    return message;
}
}
