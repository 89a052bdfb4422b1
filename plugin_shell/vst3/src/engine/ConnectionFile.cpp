#include "engine/ConnectionFile.h"

#include "protocol/MessageTypes.h"

#include <zmq.h>

#if ! defined(_WIN32)
 #include <fcntl.h>
 #include <signal.h>
 #include <sys/file.h>
 #include <sys/stat.h>
 #include <unistd.h>
#endif

namespace sa3::engine
{
namespace
{
    juce::String env (const char* name)
    {
        return juce::SystemStats::getEnvironmentVariable (name, {});
    }

    juce::File lockFileFor (const juce::File& path)
    {
        return path.getSiblingFile (path.getFileName() + ".lock");
    }

    /** The key lets anyone drive the engine: only a file of this user that nobody else can read. */
    std::string privacyProblem (const juce::File& path)
    {
#if defined(_WIN32)
        juce::ignoreUnused (path);
        return {};
#else
        struct stat info {};
        if (::stat (path.getFullPathName().toRawUTF8(), &info) != 0)
            return "cannot read it";
        if (info.st_uid != ::getuid())
            return "it is owned by another user; refusing it";
        if ((info.st_mode & 077) != 0)
            return "other users can read its key (the engine writes it with mode 0600); refusing it";
        return {};
#endif
    }

    std::optional<std::string> stringField (const juce::var& json, const char* name)
    {
        const auto& v = json.getProperty (name, {});
        if (! v.isString())
            return std::nullopt;
        return v.toString().toStdString();
    }
}

std::string privateFileProblem (const juce::File& path)
{
    return privacyProblem (path);
}

juce::File defaultConnectionPath()
{
    if (auto overridePath = env ("SA3_CONNECTION_FILE"); overridePath.isNotEmpty())
        return juce::File (overridePath);
    if (auto runtime = env ("XDG_RUNTIME_DIR"); runtime.isNotEmpty())
        return juce::File (runtime).getChildFile ("sa3").getChildFile ("engine.json");
    return juce::File::getSpecialLocation (juce::File::userHomeDirectory)
        .getChildFile (".local/share/sa3/runtime/engine.json");
}

Discovery discover (const juce::File& path)
{
    if (! path.existsAsFile())
        return { std::nullopt, "No engine is running (no connection file at " + path.getFullPathName().toStdString()
                                   + "). Start one with `sa3 serve` or the Start engine button." };
    if (auto problem = privacyProblem (path); ! problem.empty())
        return { std::nullopt, "Connection file " + path.getFullPathName().toStdString() + ": " + problem };

    const auto json = juce::JSON::parse (path.loadFileAsString());
    if (json.getDynamicObject() == nullptr)
        return { std::nullopt, "Connection file " + path.getFullPathName().toStdString() + " is not a JSON object" };

    ConnectionInfo info;
    const std::pair<const char*, std::string*> fields[] = {
        { "transport", &info.transport },         { "request_endpoint", &info.requestEndpoint },
        { "event_endpoint", &info.eventEndpoint }, { "key", &info.key },
        { "hostname", &info.hostname },           { "protocol_version", &info.protocolVersion },
    };
    for (const auto& [name, target] : fields)
    {
        auto value = stringField (json, name);
        if (! value)
            return { std::nullopt, "Connection file field '" + std::string (name) + "' is missing or not a string" };
        *target = *value;
    }
    const auto pid = json.getProperty ("pid", {});
    if (! (pid.isInt() || pid.isInt64()))
        return { std::nullopt, "Connection file field 'pid' is missing or not an integer" };
    info.pid = static_cast<juce::int64> (pid);

    if (stringField (json, "signature_scheme").value_or ("") != "hmac-sha256")
        return { std::nullopt, "Connection file: signature_scheme is not hmac-sha256" };
    info.remote = static_cast<bool> (json.getProperty ("remote", false));
    if (auto problem = curveKeysOf (json, info.curve); ! problem.empty())
        return { std::nullopt, problem };
    if (info.remote && ! info.curve.enabled())
        return { std::nullopt, "Connection file: a remote engine without CURVE keys; pair again with `sa3 engine pair`" };
    if (info.transport != "tcp" && info.transport != "ipc")
        return { std::nullopt, "Connection file: transport '" + info.transport + "' is not tcp or ipc" };
    if (info.protocolVersion.substr (0, info.protocolVersion.find ('.')) != std::string (proto::version).substr (0, 1))
        return { std::nullopt, "The engine speaks protocol " + info.protocolVersion + "; this plugin speaks "
                                   + proto::version + ". Update the plugin or the engine." };
    return { info, {} };
}

Liveness engineLiveness (const juce::File& path, const ConnectionInfo& info)
{
    if (info.remote || juce::String (info.hostname) != juce::SystemStats::getComputerName())
        return Liveness::unknown;
#if defined(_WIN32)
    juce::ignoreUnused (path);
    return Liveness::unknown;
#else
    const int fd = ::open (lockFileFor (path).getFullPathName().toRawUTF8(), O_RDONLY);
    if (fd < 0)  // written by something that never locked: only the pid can tell
        return (::kill (static_cast<pid_t> (info.pid), 0) == 0 || errno == EPERM) ? Liveness::running : Liveness::stale;
    const bool free = ::flock (fd, LOCK_SH | LOCK_NB) == 0;  // released at once by closing
    ::close (fd);
    return free ? Liveness::stale : Liveness::running;
#endif
}
}

namespace sa3::engine
{
namespace
{
    constexpr size_t keyChars = 40;

    std::string field (const juce::var& json, const char* name)
    {
        const auto& v = json.getProperty (name, {});
        return v.isString() ? v.toString().toStdString() : std::string();
    }

    std::string publicOf (const std::string& secret)
    {
        char key[keyChars + 1] = {};
        return zmq_curve_public (key, secret.c_str()) == 0 ? std::string (key) : std::string();
    }
}

bool isCurveKey (const std::string& key)
{
    std::uint8_t raw[32];
    return key.size() == keyChars && zmq_z85_decode (raw, key.c_str()) != nullptr;
}

juce::File keysDir()
{
    if (auto dir = juce::SystemStats::getEnvironmentVariable ("SA3_KEYS_DIR", {}); dir.isNotEmpty())
        return juce::File (dir);
    if (auto config = juce::SystemStats::getEnvironmentVariable ("XDG_CONFIG_HOME", {}); config.isNotEmpty())
        return juce::File (config).getChildFile ("sa3");
    return juce::File::getSpecialLocation (juce::File::userHomeDirectory).getChildFile (".config/sa3");
}

std::string curveKeysOf (const juce::var& json, CurveKeys& keys)
{
    keys = {};
    keys.serverKey = field (json, "curve_serverkey");
    if (keys.serverKey.empty())
        return {};
    if (! isCurveKey (keys.serverKey))
        return "Connection file: curve_serverkey is not a 40-character Z85 CURVE key";
    keys.publicKey = field (json, "curve_publickey");
    keys.secretKey = field (json, "curve_secretkey");
    if (! keys.secretKey.empty())
    {
        if (! isCurveKey (keys.secretKey))
            return "Connection file: curve_secretkey is not a 40-character Z85 CURVE key";
        const auto derived = publicOf (keys.secretKey);
        if (! keys.publicKey.empty() && keys.publicKey != derived)
            return "Connection file: curve_publickey does not belong to its curve_secretkey";
        keys.publicKey = derived;
        return {};
    }
    const auto file = keysDir().getChildFile ("client-key.json");
    const auto where = file.getFullPathName().toStdString();
    if (! file.existsAsFile())
        return "This engine needs this machine's client key, and " + where + " does not exist: run `sa3 engine keys client` "
               "and pair again with its public key";
    if (auto problem = privateFileProblem (file); ! problem.empty())
        return "Client key " + where + ": " + problem;
    const auto pair = juce::JSON::parse (file.loadFileAsString());
    const auto secret = field (pair, "secret");
    if (! isCurveKey (secret) || publicOf (secret) != field (pair, "public"))
        return "Client key " + where + " is not a keypair file (its public key must belong to its secret key)";
    if (! keys.publicKey.empty() && keys.publicKey != field (pair, "public"))
        return "This connection file was paired for client key " + keys.publicKey + ", and this machine's key (" + where
               + ") is " + field (pair, "public") + ": pair again with `sa3 engine pair --client-key " + field (pair, "public") + "`";
    keys.publicKey = field (pair, "public");
    keys.secretKey = secret;
    return {};
}
}
