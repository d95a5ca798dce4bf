// Writing outputs safely: data goes to a temporary file in the destination's folder, which is
// renamed over the destination only when complete. On any error the destination is untouched.
//
// What a write may replace (checked by check_writable before any work, and again when writing):
//   - nothing, or a regular file with a single link, whose mode and owner the new file keeps;
//   - a symlink is followed: the write goes through to the regular file it leads to, and the link
//     stays (like a shell's `>`); a dangling link is refused;
//   - refused: anything not a regular file (FIFO, device such as /dev/null, socket, folder) — the
//     rename would replace the node itself; a file with other hard links (the rename would silently
//     detach this name from them); a read-only file (no write bit in its mode — checked on the bits,
//     since root passes access()), unless WriteOptions::overwrite_read_only; a file of another
//     user (unless root, who can keep the owner); a name too long to add the temporary suffix to.
// Temporary files are removed on error and, once remove_temp_files_on_signals() is installed, on
// SIGINT, SIGTERM and SIGHUP.
#pragma once
#include <functional>
#include <string>

namespace chroma::io {

struct WriteOptions {
  // Replace a read-only file anyway (it stays read-only): the CLI's --overwrite.
  bool overwrite_read_only = false;
};

// Calls `write(tmp_path)` then renames tmp_path over `path` (or over the file a symlink at `path`
// leads to). Throws chroma::Error (naming `path`) for a destination the rules above refuse, or if
// the write fails; the temporary file is removed on failure.
void write_atomically(const std::string& path, const std::function<void(const std::string& tmp_path)>& write,
                      const WriteOptions& options = {});

// Throws chroma::Error now if `path` could not be written later (missing or read-only folder, a
// destination the rules above refuse, a name too long for the temporary file) — lets a command
// fail before hours of compute rather than after.
void check_writable(const std::string& path, const WriteOptions& options = {});

// Installs handlers for SIGINT, SIGTERM and SIGHUP that delete the temporary files being written
// (async-signal-safe: a fixed table of paths and unlink()), then end the process with the signal's
// default action. Call once, early in main().
void remove_temp_files_on_signals();

}  // namespace chroma::io
