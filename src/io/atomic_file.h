// Writing outputs safely: data goes to a temporary file in the destination's folder, which is
// renamed over the destination only when complete. On any error the destination is untouched.
#pragma once
#include <functional>
#include <string>

namespace chroma::io {

// Calls `write(tmp_path)` then renames tmp_path to `path`. Throws chroma::Error (naming `path`)
// if the folder is not writable or the write fails; the temporary file is removed on failure.
void write_atomically(const std::string& path, const std::function<void(const std::string& tmp_path)>& write);

// Throws chroma::Error now if `path` could not be created later (missing or read-only folder,
// path is a directory) — lets a command fail before hours of compute rather than after.
void check_writable(const std::string& path);

}  // namespace chroma::io
