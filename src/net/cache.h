// Where `chromacpp pull` keeps models, and when a pulled folder may be used.
//   <cache>/<owner>--<name>/<path in the repository>
// <cache> is $CHROMA_CACHE, else $XDG_CACHE_HOME/chroma.cpp, else $HOME/.cache/chroma.cpp. A file appears
// under its final name only after its checksum matched (it is written as <path>.part before), and the
// folder counts as complete only once the pull wrote its manifest (kManifestName) after the last file.
#pragma once
#include <string>

namespace chroma::net {

// The environment variable `name`, or "" when it is unset (cache and Hub settings).
std::string env(const char* name);

// The repository `chromacpp pull` downloads by default, and the one `generate` looks for in the cache.
inline constexpr const char* kDefaultRepo = "lodestones/Chroma1-HD";
// Written last by a successful pull: the revision and each file with its size and checksum.
inline constexpr const char* kManifestName = ".chroma-pull.json";

// $CHROMA_CACHE, else $XDG_CACHE_HOME/chroma.cpp, else $HOME/.cache/chroma.cpp (chroma::Error when none of
// the three variables is set).
std::string default_cache_dir();

// <cache>/<owner>--<name>; chroma::Error unless `repo` is "owner/name" with plain path-safe parts.
std::string repo_cache_dir(const std::string& cache, const std::string& repo);

// True when `repo_dir` holds the manifest of a finished pull (an interrupted pull leaves none).
bool is_complete_pull(const std::string& repo_dir);

}  // namespace chroma::net
