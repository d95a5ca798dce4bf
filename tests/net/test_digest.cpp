// Checksums: SHA-256 against the FIPS 180-2 examples, git blob ids against `git hash-object`.
#include <gtest/gtest.h>

#include "net/digest.h"

using namespace chroma::net;

TEST(Digest, Sha256FipsVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // One million 'a' (FIPS 180-2 appendix B.3), fed in uneven chunks as a download arrives.
  ContentHasher h(Checksum::Kind::Sha256, 1000000);
  const std::string chunk(7919, 'a');
  size_t left = 1000000;
  while (left > 0) {
    const size_t n = std::min(left, chunk.size());
    h.update(chunk.data(), n);
    left -= n;
  }
  EXPECT_EQ(h.hex_digest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Digest, GitBlobIds) {
  // printf '' | git hash-object --stdin ; printf 'hello\n' | git hash-object --stdin
  EXPECT_EQ(git_blob_sha1_hex(""), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
  EXPECT_EQ(git_blob_sha1_hex("hello\n"), "ce013625030ba8dba906f756967f9e9ca394464a");
}

TEST(Digest, ResetStartsAgain) {
  ContentHasher h(Checksum::Kind::GitBlobSha1, 6);
  h.update("garbage", 7);
  h.reset();
  h.update("hello\n", 6);
  EXPECT_EQ(h.hex_digest(), "ce013625030ba8dba906f756967f9e9ca394464a");
}
