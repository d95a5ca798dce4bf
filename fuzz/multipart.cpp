// Fuzzes the multipart/form-data path of POST /v1/images/edits: cpp-httplib's request and multipart
// parser (Debian's libcpp-httplib, a shared library built without coverage, so libFuzzer steers by our
// code only) and the form's mapping onto a request (server/api.h openai_edit_request), over a real
// loopback connection as a client sends it.
//
// Input: the first line is the Content-Type's boundary parameter, the rest the body. The first byte
// of the input also picks how it is sent: as is, or with a Content-Length 64 bytes longer than what is
// sent before the client stops (a truncated upload). A handler answers 400 for chroma::Error (the
// expected outcome of bad input), 200 otherwise; anything else it throws, a crash, a sanitizer report
// or a hang is a finding.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "common.h"
#include "io/image.h"
#include "server/api.h"

using namespace chroma;

namespace {

std::string part(const std::string& boundary, const std::string& disposition, const std::string& content,
                 const std::string& type = "") {
  std::string s = "--" + boundary + "\r\nContent-Disposition: form-data; " + disposition + "\r\n";
  if (!type.empty()) s += "Content-Type: " + type + "\r\n";
  return s + "\r\n" + content + "\r\n";
}

void make_seeds(const std::string& dir) {
  io::Image img;
  img.width = img.height = 16;
  img.rgb.assign(16 * 16 * 3, 90);
  const std::vector<uint8_t> png_bytes = io::encode_image(img, io::ImageFormat::Png);
  const std::string png(png_bytes.begin(), png_bytes.end());
  const std::string b = "XyZ123";
  const std::string text = part(b, "name=\"prompt\"", "a red hat") + part(b, "name=\"n\"", "1") +
                           part(b, "name=\"size\"", "16x16") + part(b, "name=\"strength\"", "0.5");
  const std::string image = part(b, "name=\"image\"; filename=\"in.png\"", png, "image/png");
  const std::string mask = part(b, "name=\"mask\"; filename=\"mask.png\"", png, "image/png");
  const std::string end = "--" + b + "--\r\n";
  const std::string full = b + "\n" + text + image + mask + end;
  fuzz::add_seed(dir, "edit", full);
  fuzz::add_seed(dir, "edit-truncated", std::string(1, '\x01') + fuzz::prefix(full, full.size() / 2).substr(1));
  fuzz::add_seed(dir, "image-array", b + "\n" + part(b, "name=\"image[]\"; filename=\"a.png\"", png) +
                                          part(b, "name=\"prompt\"", "x") + end);
  fuzz::add_seed(dir, "no-image", b + "\n" + text + end);
  fuzz::add_seed(dir, "quoted-boundary", "\"" + b + "\"\n" + text + image + end);
}

// One server for the whole run, on a port the kernel picks.
struct EditServer {
  httplib::Server http;
  int port = 0;
  std::thread thread;

  EditServer() {
    http.Post("/v1/images/edits", [](const httplib::Request& req, httplib::Response& res) {
      std::vector<server::FormPart> parts;
      for (const auto& [name, p] : req.files) parts.push_back({name, p.filename, p.content});
      try {
        server::OutputChoice out;
        server::openai_edit_request(parts, &out);
        res.status = 200;
      } catch (const Error& e) {
        res.status = 400;
        res.set_content(e.what(), "text/plain");
      }
    });
    http.set_read_timeout(2, 0);
    port = http.bind_to_any_port("127.0.0.1");
    if (port <= 0) {
      std::fprintf(stderr, "fuzz_multipart: cannot listen on 127.0.0.1\n");
      std::exit(1);
    }
    thread = std::thread([this] { http.listen_after_bind(); });
  }
};

EditServer& edit_server() {
  static EditServer* s = new EditServer;  // never destroyed: libFuzzer exits with the thread running
  return *s;
}

bool send_all(int fd, const std::string& bytes) {
  for (size_t done = 0; done < bytes.size();) {
    const ssize_t n = send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += size_t(n);
  }
  return true;
}

}  // namespace

CHROMA_FUZZ_SEEDS(make_seeds)

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t eol = input.find('\n');
  if (eol == std::string::npos || eol > 200) return 0;  // a boundary line first
  std::string boundary = input.substr(0, eol);
  for (char& c : boundary)
    if (c == '\r' || c == '\0') c = 'x';  // keep the fuzzed bytes inside the header's value
  const std::string body = input.substr(eol + 1);
  const bool truncated = size > 0 && (data[0] & 1);

  EditServer& srv = edit_server();
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(srv.port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return 0;
  }
  const std::string head = "POST /v1/images/edits HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                           "Content-Type: multipart/form-data; boundary=" + boundary + "\r\n" +
                           "Content-Length: " + std::to_string(body.size() + (truncated ? 64 : 0)) + "\r\n\r\n";
  if (send_all(fd, head) && send_all(fd, body)) {
    shutdown(fd, SHUT_WR);  // the client stops here: a truncated upload ends at EOF, not at the timeout
    char buf[4096];
    while (recv(fd, buf, sizeof buf, 0) > 0) {
    }
  }
  close(fd);
  return 0;
}
