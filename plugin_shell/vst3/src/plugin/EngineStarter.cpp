#include "plugin/EngineStarter.h"

#include <cstring>
#include <mutex>
#include <vector>

#if ! defined(_WIN32)
 #include <fcntl.h>
 #include <spawn.h>
 #include <sys/wait.h>
extern char** environ;
#endif

namespace sa3
{
#if ! defined(_WIN32)
namespace
{
    std::mutex startedLock;
    std::vector<pid_t> started;
}
#endif

juce::String startEngine (const juce::String& python, const juce::String& model, const juce::File& connectionFile)
{
#if defined(_WIN32)
    juce::ignoreUnused (python, model, connectionFile);
    return "Starting the engine from the plugin is not supported on Windows yet: run `sa3 serve`.";
#else
    // The `sa3` console script's own entry point (pyproject: sa3 = "sa3_engine.cli:main"), so the
    // engine starts however the package arranges its modules.
    juce::StringArray args { python, "-c", "import sys; from sa3_engine.cli import main; sys.exit(main(sys.argv[1:]))",
                             "serve", "--connection-file", connectionFile.getFullPathName() };
    if (model.isNotEmpty())
        args.addArray ({ "--model", model });
    std::vector<std::string> storage;
    for (const auto& a : args)
        storage.push_back (a.toStdString());
    std::vector<char*> argv;
    for (auto& s : storage)
        argv.push_back (s.data());
    argv.push_back (nullptr);

    connectionFile.getParentDirectory().createDirectory();
    const auto log = connectionFile.getSiblingFile ("engine-started-by-plugin.log").getFullPathName().toStdString();
    posix_spawn_file_actions_t files;
    posix_spawn_file_actions_init (&files);
    posix_spawn_file_actions_addopen (&files, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen (&files, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2 (&files, 1, 2);
    posix_spawnattr_t attributes;
    posix_spawnattr_init (&attributes);
   #if defined(POSIX_SPAWN_SETSID)
    posix_spawnattr_setflags (&attributes, POSIX_SPAWN_SETSID);  // not killed with the host's process group
   #endif
    pid_t pid = 0;
    const int error = posix_spawnp (&pid, argv[0], &files, &attributes, argv.data(), environ);
    posix_spawn_file_actions_destroy (&files);
    posix_spawnattr_destroy (&attributes);
    if (error != 0)
        return "Could not start the engine with " + python + ": " + juce::String (std::strerror (error))
               + ". Set the plugin's Python to one where sa3 is installed.";
    const std::lock_guard<std::mutex> guard (startedLock);
    started.push_back (pid);
    return {};
#endif
}

void reapStartedEngines()
{
#if ! defined(_WIN32)
    // Only the engines this plugin started: the host's own children are the host's to wait for.
    const std::lock_guard<std::mutex> guard (startedLock);
    started.erase (std::remove_if (started.begin(), started.end(),
                                   [] (pid_t pid) { int status = 0; return ::waitpid (pid, &status, WNOHANG) != 0; }),
                   started.end());
#endif
}
}
