#pragma once
// The protocol envelope: [routing..., "<SA3|MSG>", signature, header, parent_header, content,
// buffer 0..n]. Encoding signs, decoding verifies; both sides of the conformance tests use this file.

#include <juce_core/juce_core.h>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace sa3::proto
{
using Frames = std::vector<std::string>;

struct Header
{
    std::string msgId, msgType, session, date, version;

    static Header make (const std::string& msgType, const std::string& session);
    static Header fromVar (const juce::var& v, const char* name);
    juce::var toVar() const;
};

struct Message
{
    Header header;
    std::optional<Header> parent;  // none: {} on the wire
    juce::var content;             // a map (juce::DynamicObject)
    Frames buffers;                // raw bytes; audio is planar little-endian float32
};

/** A message refused on receipt, with the protocol's error code (`bad_signature`, `bad_request`). */
struct EnvelopeError : std::runtime_error
{
    EnvelopeError (std::string c, const std::string& what) : std::runtime_error (what), code (std::move (c)) {}
    std::string code;
};

/** RFC 3339 UTC with microseconds, e.g. 2025-06-01T12:00:00.000000Z. */
std::string nowRfc3339();
std::string newId();  // 32 lowercase hex digits

Frames encode (const Message& message, const std::string& key);

/** `frames` as received: any routing frames (DEALER: none; SUB: the topic), then the delimiter. */
Message decode (const Frames& frames, const std::string& key);

/** The content map, or an empty one. */
juce::DynamicObject& contentOf (Message& message);
juce::var newMap();
}
