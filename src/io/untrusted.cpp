// Shared helpers of the readers (untrusted.h).
#include "io/untrusted.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <vector>

#include "tensor/error.h"

namespace chroma::io {
namespace {

using json = nlohmann::json;

// Length of the valid UTF-8 sequence starting at s[i] (overlongs and surrogates are invalid), or 0.
size_t utf8_length(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return k < s.size() ? uint8_t(s[k]) : uint8_t(0); };
  const uint8_t c = byte(i);
  const auto cont = [&](size_t k, uint8_t lo = 0x80, uint8_t hi = 0xBF) { return byte(k) >= lo && byte(k) <= hi; };
  if (c >= 0xC2 && c <= 0xDF) return cont(i + 1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    const uint8_t lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    return cont(i + 1, lo, hi) && cont(i + 2) ? 3 : 0;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    const uint8_t lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    return cont(i + 1, lo, hi) && cont(i + 2) && cont(i + 3) ? 4 : 0;
  }
  return 0;
}

void append_hex(std::string& out, uint8_t c) {
  static const char kHex[] = "0123456789abcdef";
  out += "\\x";
  out += kHex[c >> 4];
  out += kHex[c & 15];
}

// Counts bracket depth outside strings, so the limit holds before the recursive parser runs.
void check_depth(std::string_view text, const std::string& what) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth)
        throw Error(what + " is nested deeper than " + std::to_string(kMaxJsonDepth) + " levels (at byte " +
                    std::to_string(i) + ")");
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
}

}  // namespace

std::string printable(std::string_view s, size_t max_bytes) {
  std::string out;
  size_t i = 0;
  for (; i < s.size() && i < max_bytes; ++i) {
    const uint8_t c = uint8_t(s[i]);
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c == '\\') out += "\\\\";
    else if (c >= 0x20 && c < 0x7F) out += char(c);
    else if (const size_t n = c >= 0x80 ? utf8_length(s, i) : 0; n && !(c == 0xC2 && uint8_t(s[i + 1]) < 0xA0)) {
      out.append(s.substr(i, n));  // valid UTF-8 other than a C1 control (U+0080..U+009F)
      i += n - 1;
    } else {
      append_hex(out, c);
    }
  }
  if (i < s.size()) out += "... (" + std::to_string(s.size()) + " bytes)";
  return out;
}

std::string quote(std::string_view s) { return "'" + printable(s) + "'"; }

const char* file_kind(unsigned mode) {
  if (S_ISDIR(mode)) return "a folder";
  if (S_ISFIFO(mode)) return "a named pipe";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  if (S_ISSOCK(mode)) return "a socket";
  return "a special file";
}

InputFile::InputFile(const std::string& path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd_ < 0) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat st {};
  if (fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
    const std::string kind = file_kind(st.st_mode);
    ::close(fd_);
    throw Error(path + ": is " + kind + ", not a regular file");
  }
  size_ = uint64_t(st.st_size);
}

InputFile::~InputFile() { ::close(fd_); }

MappedFile::MappedFile(const std::string& path) {
  const InputFile file(path);
  size_ = file.size();
  if (size_ == 0) return;
  void* map = mmap(nullptr, size_t(size_), PROT_READ, MAP_PRIVATE, file.fd(), 0);
  if (map == MAP_FAILED) throw Error(path + ": cannot mmap (" + std::strerror(errno) + ")");
  data_ = static_cast<const uint8_t*>(map);
}

MappedFile::~MappedFile() {
  if (data_) munmap(const_cast<uint8_t*>(data_), size_t(size_));
}

std::string read_input_file(const std::string& path, uint64_t max_bytes) {
  const InputFile file(path);
  if (file.size() > max_bytes)
    throw Error(path + ": " + std::to_string(file.size()) + " bytes, more than the " + std::to_string(max_bytes) +
                " this file may have");
  std::string bytes(size_t(file.size()), '\0');
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(file.fd(), bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error(path + ": cannot read (" + (n < 0 ? std::strerror(errno) : "file shrank") + ")");
    done += size_t(n);
  }
  return bytes;
}

json parse_json(std::string_view text, const std::string& what) {
  check_depth(text, what);
  std::vector<std::set<std::string>> keys;  // the keys seen in each object being parsed
  const json::parser_callback_t no_duplicates = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) keys.emplace_back();
    else if (event == json::parse_event_t::object_end) keys.pop_back();
    else if (event == json::parse_event_t::key && !keys.back().insert(parsed.get<std::string>()).second)
      throw Error(what + ": key " + quote(parsed.get<std::string>()) + " appears twice in one object");
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), no_duplicates);
  } catch (const json::exception& e) {
    throw Error(what + " is not valid JSON (" + printable(e.what(), 300) + ")");
  }
}

std::string describe_json(const json& v) {
  if (v.is_array()) return "an array of " + std::to_string(v.size()) + " values";
  if (v.is_object()) return "an object of " + std::to_string(v.size()) + " keys";
  if (v.is_string()) return "\"" + printable(v.get_ref<const std::string&>(), 100) + "\"";
  return v.dump();  // a number, bool or null: short
}

}  // namespace chroma::io
