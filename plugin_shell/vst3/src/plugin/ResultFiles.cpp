#include "plugin/ResultFiles.h"

#include <cstdio>
#include <stdexcept>

#if ! defined(_WIN32)
 #include <unistd.h>
#endif

namespace sa3::results
{
namespace
{
    constexpr int maxNumber = 9999;

    juce::MemoryBlock wavBytes (const proto::PlanarAudio& audio)
    {
        const auto dataBytes = static_cast<juce::uint32> (audio.samples.size() * sizeof (float));
        juce::MemoryOutputStream out;
        out.write ("RIFF", 4);
        out.writeInt (static_cast<int> (36 + dataBytes));
        out.write ("WAVEfmt ", 8);
        out.writeInt (16);
        out.writeShort (3);  // IEEE float
        out.writeShort (static_cast<short> (audio.channels));
        out.writeInt (audio.sampleRate);
        out.writeInt (audio.sampleRate * audio.channels * 4);
        out.writeShort (static_cast<short> (audio.channels * 4));
        out.writeShort (32);
        out.write ("data", 4);
        out.writeInt (static_cast<int> (dataBytes));
        for (juce::int64 i = 0; i < audio.frames; ++i)
            for (int c = 0; c < audio.channels; ++c)
                out.writeFloat (audio.channel (c)[i]);  // little-endian, as WAV is
        return out.getMemoryBlock();
    }

    /** Moves `from` to `to` only if `to` does not exist yet. */
    bool placeWithoutReplacing (const juce::File& from, const juce::File& to)
    {
#if defined(_WIN32)
        return std::rename (from.getFullPathName().toRawUTF8(), to.getFullPathName().toRawUTF8()) == 0;
#else
        if (::link (from.getFullPathName().toRawUTF8(), to.getFullPathName().toRawUTF8()) != 0)
            return false;
        from.deleteFile();
        return true;
#endif
    }

    void writeAtomically (const juce::File& target, const void* data, size_t size)
    {
        const auto temp = target.getSiblingFile ("." + target.getFileName() + "." + juce::Uuid().toString() + ".tmp");
        if (! temp.replaceWithData (data, size))
            throw std::runtime_error ("cannot write " + temp.getFullPathName().toStdString());
        if (! placeWithoutReplacing (temp, target))
        {
            temp.deleteFile();
            throw std::runtime_error ("exists");
        }
    }
}

juce::File sidecarFor (const juce::File& wav)
{
    return wav.withFileExtension ("json");
}

juce::File write (const juce::File& folder, const juce::String& stem, const proto::PlanarAudio& audio,
                  const juce::var& sidecar)
{
    if (! folder.createDirectory())
        throw std::runtime_error ("cannot create the results folder " + folder.getFullPathName().toStdString());
    const auto wav = wavBytes (audio);
    for (int n = 1; n <= maxNumber; ++n)
    {
        const auto name = stem + "-" + juce::String (n).paddedLeft ('0', 3);
        const auto file = folder.getChildFile (name + ".wav");
        if (file.exists() || sidecarFor (file).exists())
            continue;
        auto described = juce::JSON::toString (sidecar, false).toStdString();
        try
        {
            writeAtomically (sidecarFor (file), described.data(), described.size());
        }
        catch (const std::runtime_error&)
        {
            continue;  // taken meanwhile
        }
        try
        {
            writeAtomically (file, wav.getData(), wav.getSize());
            return file;
        }
        catch (const std::runtime_error&)
        {
            continue;
        }
    }
    throw std::runtime_error ("no free result name in " + folder.getFullPathName().toStdString());
}

std::optional<proto::PlanarAudio> readWav (const juce::File& file)
{
    juce::MemoryBlock bytes;
    if (! file.loadFileAsData (bytes) || bytes.getSize() < 44)
        return std::nullopt;
    juce::MemoryInputStream in (bytes, false);
    char tag[5] = {};
    in.read (tag, 4);
    in.readInt();
    char wave[5] = {};
    in.read (wave, 4);
    if (juce::String (tag) != "RIFF" || juce::String (wave) != "WAVE")
        return std::nullopt;
    proto::PlanarAudio audio;
    int format = 0, bits = 0;
    while (! in.isExhausted())
    {
        in.read (tag, 4);
        const auto size = static_cast<juce::uint32> (in.readInt());
        const auto next = in.getPosition() + size + (size & 1);
        if (juce::String (tag) == "fmt ")
        {
            format = in.readShort();
            audio.channels = in.readShort();
            audio.sampleRate = in.readInt();
            in.readInt();
            in.readShort();
            bits = in.readShort();
        }
        else if (juce::String (tag) == "data")
        {
            if (format != 3 || bits != 32 || audio.channels < 1)
                return std::nullopt;
            audio.frames = size / (4 * static_cast<juce::uint32> (audio.channels));
            audio.samples.resize (static_cast<size_t> (audio.frames) * static_cast<size_t> (audio.channels));
            for (juce::int64 i = 0; i < audio.frames; ++i)
                for (int c = 0; c < audio.channels; ++c)
                    audio.samples[static_cast<size_t> (c * audio.frames + i)] = in.readFloat();
            return audio;
        }
        in.setPosition (next);
    }
    return std::nullopt;
}

juce::var readSidecar (const juce::File& wav)
{
    return juce::JSON::parse (sidecarFor (wav));
}
}
