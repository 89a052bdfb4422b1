#include "protocol/AudioMap.h"

#include "protocol/Envelope.h"

#include <cstring>
#include <stdexcept>

namespace sa3::proto
{
namespace
{
    juce::int64 requireInt (const juce::var& map, const char* name)
    {
        const auto& v = map.getProperty (name, {});
        if (! (v.isInt() || v.isInt64()))
            throw std::runtime_error (std::string ("audio map: '") + name + "' is missing or not an integer");
        return static_cast<juce::int64> (v);
    }

    void swapIfBigEndian (float* data, size_t count)
    {
        if (! juce::ByteOrder::isBigEndian())
            return;
        for (size_t i = 0; i < count; ++i)
        {
            juce::uint32 bits;
            std::memcpy (&bits, data + i, 4);
            bits = juce::ByteOrder::swap (bits);
            std::memcpy (data + i, &bits, 4);
        }
    }
}

juce::var audioMap (int index, const PlanarAudio& audio, std::string& bufferOut)
{
    bufferOut.assign (reinterpret_cast<const char*> (audio.samples.data()), audio.samples.size() * sizeof (float));
    swapIfBigEndian (reinterpret_cast<float*> (bufferOut.data()), audio.samples.size());
    auto map = newMap();
    auto* o = map.getDynamicObject();
    o->setProperty ("buffer", index);
    o->setProperty ("sample_rate", audio.sampleRate);
    o->setProperty ("channels", audio.channels);
    o->setProperty ("frames", audio.frames);
    return map;
}

PlanarAudio audioFromMap (const juce::var& map, const std::vector<std::string>& buffers)
{
    if (map.hasProperty ("path"))
        throw std::runtime_error ("the engine sent a file path, not audio (output_dir is not used by the plugin)");
    const auto index = requireInt (map, "buffer");
    PlanarAudio audio;
    audio.sampleRate = static_cast<int> (requireInt (map, "sample_rate"));
    audio.channels = static_cast<int> (requireInt (map, "channels"));
    audio.frames = requireInt (map, "frames");
    if (index < 0 || index >= static_cast<juce::int64> (buffers.size()))
        throw std::runtime_error ("audio map: buffer " + std::to_string (index) + " was not sent");
    if (audio.sampleRate < 1 || audio.channels < 1 || audio.channels > 8 || audio.frames < 1)
        throw std::runtime_error ("audio map: sample_rate, channels or frames out of range");
    const auto& bytes = buffers[static_cast<size_t> (index)];
    const auto count = static_cast<size_t> (audio.channels) * static_cast<size_t> (audio.frames);
    if (bytes.size() != count * sizeof (float))
        throw std::runtime_error ("audio map: buffer holds " + std::to_string (bytes.size()) + " bytes, expected "
                                  + std::to_string (count * sizeof (float)));
    audio.samples.resize (count);
    std::memcpy (audio.samples.data(), bytes.data(), bytes.size());
    swapIfBigEndian (audio.samples.data(), count);
    return audio;
}
}
