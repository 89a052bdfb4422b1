#include "protocol/Hmac.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdexcept>

namespace sa3::proto
{
namespace
{
    struct MacContext
    {
        MacContext() : mac (EVP_MAC_fetch (nullptr, "HMAC", nullptr)), ctx (mac ? EVP_MAC_CTX_new (mac) : nullptr) {}
        ~MacContext()
        {
            EVP_MAC_CTX_free (ctx);
            EVP_MAC_free (mac);
        }
        EVP_MAC* mac;
        EVP_MAC_CTX* ctx;
    };
}

std::string signParts (const std::string& key, const std::vector<Bytes>& parts)
{
    MacContext m;
    char digestName[] = "SHA256";
    OSSL_PARAM params[] = { OSSL_PARAM_construct_utf8_string ("digest", digestName, 0), OSSL_PARAM_construct_end() };

    if (m.ctx == nullptr || EVP_MAC_init (m.ctx, reinterpret_cast<const unsigned char*> (key.data()), key.size(), params) != 1)
        throw std::runtime_error ("HMAC-SHA256 is not available from OpenSSL");

    for (const auto& part : parts)
    {
        unsigned char length[8];
        for (int i = 0; i < 8; ++i)
            length[i] = static_cast<unsigned char> ((static_cast<unsigned long long> (part.size) >> (56 - 8 * i)) & 0xff);
        EVP_MAC_update (m.ctx, length, sizeof (length));
        if (part.size > 0)
            EVP_MAC_update (m.ctx, static_cast<const unsigned char*> (part.data), part.size);
    }

    unsigned char digest[32];
    size_t digestSize = 0;
    EVP_MAC_final (m.ctx, digest, &digestSize, sizeof (digest));

    static const char* hex = "0123456789abcdef";
    std::string out;
    out.reserve (64);
    for (size_t i = 0; i < digestSize; ++i)
    {
        out.push_back (hex[digest[i] >> 4]);
        out.push_back (hex[digest[i] & 15]);
    }
    return out;
}

bool equalInConstantTime (const std::string& a, const void* b, size_t bSize)
{
    if (a.size() != bSize)
        return false;
    unsigned char diff = 0;
    const auto* bb = static_cast<const unsigned char*> (b);
    for (size_t i = 0; i < bSize; ++i)
        diff |= static_cast<unsigned char> (a[i] ^ bb[i]);
    return diff == 0;
}
}
