#pragma once
// Every protocol name the plugin uses, in one table (docs/protocol.md is the contract): a rename in the
// protocol is a change of one string here.

namespace sa3::proto
{
inline constexpr const char* version = "2.0";
inline constexpr const char* delimiter = "<SA3|MSG>";

namespace request
{
    inline constexpr const char* hello = "hello";
    inline constexpr const char* ping = "ping";
    inline constexpr const char* cancel = "cancel";
    inline constexpr const char* generate = "generate";
    inline constexpr const char* inpaint = "inpaint";
    inline constexpr const char* extend = "extend";
    inline constexpr const char* variation = "variation";
}

namespace event
{
    inline constexpr const char* welcome = "welcome";
    inline constexpr const char* progress = "progress";
    inline constexpr const char* error = "error";
    inline constexpr const char* cancelled = "cancelled";
}

namespace field
{
    inline constexpr const char* variationAmount = "init_noise_level";
}

inline constexpr const char* replySuffix = "_reply";
}
