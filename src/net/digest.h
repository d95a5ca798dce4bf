// Checksums of downloaded files, as the Hugging Face Hub publishes them: the SHA-256 of the content for
// files stored with Git LFS (the tree listing's lfs.oid), and the git blob id for small files
// (the listing's oid: SHA-1 of "blob <size>\0" followed by the content). OpenSSL's libcrypto computes them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace chroma::net {

// What a file's content must hash to.
struct Checksum {
  enum class Kind { Sha256, GitBlobSha1 };
  Kind kind = Kind::Sha256;
  std::string hex;  // lower-case hex digest
  const char* name() const { return kind == Kind::Sha256 ? "sha256" : "git blob sha1"; }
};

// Incremental hash of a file's content for one Checksum kind; `size` is the full content size (the git
// blob header holds it, so it is hashed before the first byte).
class ContentHasher {
 public:
  ContentHasher(Checksum::Kind kind, uint64_t size);
  ~ContentHasher();
  ContentHasher(const ContentHasher&) = delete;
  ContentHasher& operator=(const ContentHasher&) = delete;

  void update(const void* data, size_t n);
  std::string hex_digest();  // finishes the hash; call once
  // Starts again from an empty content (a server ignored a Range request and sent the whole file).
  void reset();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One-shot digests of a byte string (tests and small files).
std::string sha256_hex(std::string_view data);
std::string git_blob_sha1_hex(std::string_view content);

}  // namespace chroma::net
