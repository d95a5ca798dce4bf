#include "net/digest.h"

#include <openssl/evp.h>

#include "tensor/error.h"

namespace chroma::net {

struct ContentHasher::Impl {
  EVP_MD_CTX* ctx = nullptr;
  Checksum::Kind kind;
  uint64_t size;
};

ContentHasher::ContentHasher(Checksum::Kind kind, uint64_t size) : impl_(std::make_unique<Impl>()) {
  impl_->kind = kind;
  impl_->size = size;
  impl_->ctx = EVP_MD_CTX_new();
  if (!impl_->ctx) throw Error("checksum: cannot allocate a libcrypto digest context");
  reset();
}

ContentHasher::~ContentHasher() { EVP_MD_CTX_free(impl_->ctx); }

void ContentHasher::reset() {
  const EVP_MD* md = impl_->kind == Checksum::Kind::Sha256 ? EVP_sha256() : EVP_sha1();
  if (EVP_DigestInit_ex(impl_->ctx, md, nullptr) != 1) throw Error("checksum: libcrypto digest init failed");
  if (impl_->kind == Checksum::Kind::GitBlobSha1) {
    // git hashes objects with a header: "blob <decimal size>\0".
    const std::string header = "blob " + std::to_string(impl_->size);
    update(header.data(), header.size() + 1);  // + the terminating NUL
  }
}

void ContentHasher::update(const void* data, size_t n) {
  if (EVP_DigestUpdate(impl_->ctx, data, n) != 1) throw Error("checksum: libcrypto digest update failed");
}

std::string ContentHasher::hex_digest() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(impl_->ctx, md, &len) != 1) throw Error("checksum: libcrypto digest final failed");
  static const char* digits = "0123456789abcdef";
  std::string hex;
  for (unsigned i = 0; i < len; ++i) {
    hex += digits[md[i] >> 4];
    hex += digits[md[i] & 15];
  }
  return hex;
}

std::string sha256_hex(std::string_view data) {
  ContentHasher h(Checksum::Kind::Sha256, data.size());
  h.update(data.data(), data.size());
  return h.hex_digest();
}

std::string git_blob_sha1_hex(std::string_view content) {
  ContentHasher h(Checksum::Kind::GitBlobSha1, content.size());
  h.update(content.data(), content.size());
  return h.hex_digest();
}

}  // namespace chroma::net
