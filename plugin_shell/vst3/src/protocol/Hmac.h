#pragma once
// HMAC-SHA256 as protocol signs messages: over every signed part, each preceded by its length as
// 8 bytes big-endian; the signature is the 64 lowercase hex digits.

#include <string>
#include <vector>

namespace sa3::proto
{
struct Bytes
{
    const void* data = nullptr;
    size_t size = 0;
};

std::string signParts (const std::string& key, const std::vector<Bytes>& parts);

/** Byte-for-byte comparison in constant time (for signatures). */
bool equalInConstantTime (const std::string& a, const void* b, size_t bSize);
}
