#include "protocol/Msgpack.h"

#include <msgpack.hpp>
#include <stdexcept>

namespace sa3::proto
{
namespace
{
    using Packer = msgpack::packer<msgpack::sbuffer>;

    void packString (Packer& pk, const juce::String& text)
    {
        const auto utf8 = text.toStdString();
        pk.pack_str (static_cast<uint32_t> (utf8.size()));
        pk.pack_str_body (utf8.data(), static_cast<uint32_t> (utf8.size()));
    }

    void pack (Packer& pk, const juce::var& v)
    {
        if (v.isVoid() || v.isUndefined())
            pk.pack_nil();
        else if (v.isBool())
            v ? pk.pack_true() : pk.pack_false();
        else if (v.isInt() || v.isInt64())
            pk.pack_int64 (static_cast<juce::int64> (v));
        else if (v.isDouble())
            pk.pack_double (static_cast<double> (v));
        else if (v.isString())
            packString (pk, v.toString());
        else if (auto* block = v.getBinaryData())
        {
            pk.pack_bin (static_cast<uint32_t> (block->getSize()));
            pk.pack_bin_body (static_cast<const char*> (block->getData()), static_cast<uint32_t> (block->getSize()));
        }
        else if (auto* array = v.getArray())
        {
            pk.pack_array (static_cast<uint32_t> (array->size()));
            for (const auto& item : *array)
                pack (pk, item);
        }
        else if (auto* object = v.getDynamicObject())
        {
            const auto& props = object->getProperties();
            pk.pack_map (static_cast<uint32_t> (props.size()));
            for (const auto& prop : props)
            {
                packString (pk, prop.name.toString());
                pack (pk, prop.value);
            }
        }
        else
            throw std::runtime_error ("a value msgpack cannot carry");
    }

    juce::var toVar (const msgpack::object& o)
    {
        switch (o.type)
        {
            case msgpack::type::NIL: return {};
            case msgpack::type::BOOLEAN: return o.via.boolean;
            case msgpack::type::POSITIVE_INTEGER:
                return static_cast<juce::int64> (std::min<uint64_t> (o.via.u64, static_cast<uint64_t> (INT64_MAX)));
            case msgpack::type::NEGATIVE_INTEGER: return static_cast<juce::int64> (o.via.i64);
            case msgpack::type::FLOAT32:
            case msgpack::type::FLOAT64: return o.via.f64;
            case msgpack::type::STR: return juce::String::fromUTF8 (o.via.str.ptr, static_cast<int> (o.via.str.size));
            case msgpack::type::BIN: return juce::var (o.via.bin.ptr, o.via.bin.size);
            case msgpack::type::ARRAY:
            {
                juce::Array<juce::var> items;
                for (uint32_t i = 0; i < o.via.array.size; ++i)
                    items.add (toVar (o.via.array.ptr[i]));
                return items;
            }
            case msgpack::type::MAP:
            {
                auto* object = new juce::DynamicObject();
                juce::var result (object);
                for (uint32_t i = 0; i < o.via.map.size; ++i)
                {
                    const auto& kv = o.via.map.ptr[i];
                    if (kv.key.type != msgpack::type::STR)
                        throw std::runtime_error ("a map key that is not a string");
                    object->setProperty (juce::String::fromUTF8 (kv.key.via.str.ptr, static_cast<int> (kv.key.via.str.size)),
                                         toVar (kv.val));
                }
                return result;
            }
            case msgpack::type::EXT:
            default: throw std::runtime_error ("a msgpack extension type");
        }
    }
}

std::string packVar (const juce::var& value)
{
    msgpack::sbuffer buffer;
    Packer pk (&buffer);
    pack (pk, value);
    return std::string (buffer.data(), buffer.size());
}

juce::var unpackVar (const void* data, size_t size, const char* what)
{
    try
    {
        std::size_t offset = 0;
        auto handle = msgpack::unpack (static_cast<const char*> (data), size, offset);
        if (offset != size)
            throw std::runtime_error ("trailing bytes");
        return toVar (handle.get());
    }
    catch (const std::exception& e)
    {
        throw std::runtime_error (std::string (what) + ": not valid msgpack (" + e.what() + ")");
    }
}
}
