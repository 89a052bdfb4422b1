// sa3_protocol_tool: the plugin's own protocol code driven from the command line, for the
// conformance tests (tests/test_vst3_protocol.py). Frames travel through files as
// [8-byte big-endian length][bytes] per frame, delimiter included.
//
//   encode --key K --type T --content JSON [--buffer FILE]...   frames on stdout
//   decode --key K                                               frames on stdin -> JSON on stdout
//   call   --type T --content JSON [--buffer FILE]... [--connection-file F]
//          a real round trip to the engine: JSON {reply, events} on stdout

#include "engine/ConnectionFile.h"
#include "engine/EngineLink.h"
#include "protocol/AudioMap.h"
#include "protocol/Envelope.h"

#include <iostream>
#include <iterator>

using namespace sa3;

namespace
{
/** The argument after `name` ("--key VALUE"). */
juce::String option (const juce::ArgumentList& args, const char* name, const juce::String& fallback = {})
{
    for (int i = 0; i + 1 < args.size(); ++i)
        if (args[i].text == name)
            return args[i + 1].text;
    return fallback;
}

proto::Frames buffersFrom (const juce::ArgumentList& args)
{
    proto::Frames buffers;
    for (int i = 0; i + 1 < args.size(); ++i)
        if (args[i].text == "--buffer")
        {
            juce::MemoryBlock block;
            juce::File (args[i + 1].text).loadFileAsData (block);
            buffers.emplace_back (static_cast<const char*> (block.getData()), block.getSize());
        }
    return buffers;
}

juce::var contentFrom (const juce::ArgumentList& args)
{
    auto content = juce::JSON::parse (option (args, "--content", "{}"));
    if (content.getDynamicObject() == nullptr)
        throw std::runtime_error ("--content must be a JSON object");
    return content;
}

void writeFrames (const proto::Frames& frames)
{
    for (const auto& frame : frames)
    {
        unsigned char length[8];
        for (int i = 0; i < 8; ++i)
            length[i] = static_cast<unsigned char> ((static_cast<juce::uint64> (frame.size()) >> (56 - 8 * i)) & 0xff);
        std::cout.write (reinterpret_cast<const char*> (length), 8);
        std::cout.write (frame.data(), static_cast<std::streamsize> (frame.size()));
    }
    std::cout.flush();
}

proto::Frames readFrames (std::istream& in)
{
    const std::string all ((std::istreambuf_iterator<char> (in)), std::istreambuf_iterator<char>());
    proto::Frames frames;
    for (size_t at = 0; at + 8 <= all.size();)
    {
        juce::uint64 length = 0;
        for (int i = 0; i < 8; ++i)
            length = (length << 8) | static_cast<unsigned char> (all[at + static_cast<size_t> (i)]);
        at += 8;
        if (length > all.size() - at)
            throw std::runtime_error ("truncated frame file");
        frames.push_back (all.substr (at, length));
        at += length;
    }
    return frames;
}

/** What a client makes of a message: its header, content, and the audio of any results. */
juce::var describe (const proto::Message& message)
{
    auto out = proto::newMap();
    auto* o = out.getDynamicObject();
    o->setProperty ("msg_type", juce::String (message.header.msgType));
    o->setProperty ("msg_id", juce::String (message.header.msgId));
    o->setProperty ("session", juce::String (message.header.session));
    o->setProperty ("parent_msg_id", message.parent ? juce::var (juce::String (message.parent->msgId)) : juce::var());
    o->setProperty ("content", message.content);
    juce::Array<juce::var> audio;
    if (auto* results = message.content.getProperty ("results", {}).getArray())
        for (const auto& result : *results)
        {
            const auto decoded = proto::audioFromMap (result.getProperty ("audio", {}), message.buffers);
            auto a = proto::newMap();
            a.getDynamicObject()->setProperty ("sample_rate", decoded.sampleRate);
            a.getDynamicObject()->setProperty ("channels", decoded.channels);
            a.getDynamicObject()->setProperty ("frames", decoded.frames);
            juce::Array<juce::var> head;
            for (size_t i = 0; i < std::min<size_t> (8, decoded.samples.size()); ++i)
                head.add (static_cast<double> (decoded.samples[i]));
            a.getDynamicObject()->setProperty ("head", head);
            audio.add (a);
        }
    o->setProperty ("audio", audio);
    return out;
}

int call (const juce::ArgumentList& args)
{
    const auto path = option (args, "--connection-file").isNotEmpty() ? juce::File (option (args, "--connection-file"))
                                                                 : engine::defaultConnectionPath();
    const auto found = engine::discover (path);
    if (! found.info)
        throw std::runtime_error (found.problem);
    engine::EngineLink link;
    link.open (*found.info, proto::newId(), 64LL << 20, 10000);
    const auto type = option (args, "--type").toStdString();
    const auto id = link.send (type, contentFrom (args), buffersFrom (args));
    juce::Array<juce::var> events;
    for (;;)
    {
        auto incoming = link.receive (60000);
        if (! incoming)
            throw std::runtime_error ("no reply from the engine");
        if (incoming->isEvent)
            events.add (juce::String (incoming->message.header.msgType));
        else if (incoming->message.parent && incoming->message.parent->msgId == id)
        {
            auto out = proto::newMap();
            out.getDynamicObject()->setProperty ("reply", describe (incoming->message));
            out.getDynamicObject()->setProperty ("events", events);
            std::cout << juce::JSON::toString (out, true) << std::endl;
            return 0;
        }
    }
}
}

int main (int argc, char* argv[])
{
    const juce::ArgumentList args (argc, argv);
    const auto command = args.size() > 0 ? args[0].text : juce::String();
    const auto key = option (args, "--key").toStdString();
    try
    {
        if (command == "encode")
        {
            const proto::Message message { proto::Header::make (option (args, "--type").toStdString(),
                                                                option (args, "--session", "c0ffee").toStdString()),
                                           std::nullopt, contentFrom (args), buffersFrom (args) };
            writeFrames (proto::encode (message, key));
            return 0;
        }
        if (command == "decode")
        {
            std::cout << juce::JSON::toString (describe (proto::decode (readFrames (std::cin), key)), true) << std::endl;
            return 0;
        }
        if (command == "call")
            return call (args);
        std::cerr << "usage: sa3_protocol_tool encode|decode|call [options] (see the source's header)" << std::endl;
        return 64;
    }
    catch (const proto::EnvelopeError& e)
    {
        std::cout << "{\"error\": \"" << e.code << "\", \"message\": " << juce::JSON::toString (juce::String (e.what())) << "}" << std::endl;
        return 2;
    }
    catch (const std::exception& e)
    {
        std::cerr << "sa3_protocol_tool: " << e.what() << std::endl;
        return 1;
    }
}
