#pragma once
// msgpack <-> juce::var for the protocol's maps. Strings are always msgpack str (never bin); integers
// stay integers, floats are sent as float64; binary data is never put in a map by the plugin.

#include <juce_core/juce_core.h>
#include <string>

namespace sa3::proto
{
std::string packVar (const juce::var& value);

/** Throws std::runtime_error naming `what` when the bytes are not one complete msgpack value. */
juce::var unpackVar (const void* data, size_t size, const char* what);
}
