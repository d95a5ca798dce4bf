// Reading files we do not control (weights, shard indexes, tokenizer models, init noise): the
// helpers every reader shares, so each guarantee holds in one place.
//   - Only regular files are opened: a FIFO would block open() until some writer appears, and a
//     device or folder is never a model file. The check happens before anything blocks.
//   - JSON is parsed with a nesting limit checked before parsing (nlohmann's parser, dump() and
//     destructor recurse per level: 100,000 '[' overflow the stack) and with duplicate keys refused
//     (nlohmann silently keeps the last one).
//   - Text from a file is echoed in messages only through printable(): escaped and cut short.
#pragma once
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace chroma::io {

// The same limit as the Rust safetensors validator; real headers nest 3 levels.
constexpr int kMaxJsonDepth = 128;

// `s` safe to print on a terminal or in a one-line message: control bytes (C0, DEL, C1) and bytes
// that are not valid UTF-8 become \xNN (\n, \r, \t as such), a backslash becomes \\; longer than
// `max_bytes`, it is cut and "... (N bytes)" appended.
std::string printable(std::string_view s, size_t max_bytes = 200);

// `s` in single quotes, printable: the form readers use for names taken from a file.
std::string quote(std::string_view s);

// What a file that is not a regular file is, for messages: "a named pipe", "a device", "a folder", ...
// (`mode`: st_mode from stat).
const char* file_kind(unsigned mode);

// A read-only file descriptor of a regular file; throws chroma::Error naming the path otherwise
// (opened non-blocking, so a FIFO is refused instead of waited on).
class InputFile {
 public:
  explicit InputFile(const std::string& path);
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  int fd() const { return fd_; }
  uint64_t size() const { return size_; }

 private:
  int fd_ = -1;
  uint64_t size_ = 0;
};

// A regular file mapped read-only (nothing mapped for an empty file); unmapped on destruction.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// The whole of a regular file of at most `max_bytes` (throws naming the path if larger).
std::string read_input_file(const std::string& path, uint64_t max_bytes);

// Parses JSON text from a file: depth ≤ kMaxJsonDepth, no key twice in one object. Throws
// chroma::Error "<what> ..." with the parser's message made printable.
nlohmann::json parse_json(std::string_view text, const std::string& what);

// A JSON value for an error message: scalars printed (printable, cut), arrays and objects
// summarised by size — an untrusted value is never serialised whole.
std::string describe_json(const nlohmann::json& v);

}  // namespace chroma::io
