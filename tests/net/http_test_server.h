// A small HTTP/1.1 server on 127.0.0.1 for the downloader tests: one thread, one connection at a time,
// "Connection: close" on every response. A handler maps each request to a response; a response can drop
// the connection after some body bytes (a network failure midway).
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace chroma::net::testing {

struct Request {
  std::string path;                            // without the query
  std::string query;                           // after '?', or ""
  std::map<std::string, std::string> headers;  // names lower-case
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

struct Response {
  int status = 200;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  size_t drop_after = std::string::npos;  // close the connection after this many body bytes
};

// The response for `content` honouring a "Range: bytes=N-" request (206), as a file server does.
inline Response serve_content(const Request& req, const std::string& content) {
  Response r;
  unsigned long long start = 0;
  const std::string range = req.header("range");
  if (!range.empty() && std::sscanf(range.c_str(), "bytes=%llu-", &start) == 1 && start < content.size()) {
    r.status = 206;
    r.body = content.substr(start);
    r.headers.push_back({"Content-Range", "bytes " + std::to_string(start) + "-" + std::to_string(content.size() - 1) +
                                              "/" + std::to_string(content.size())});
  } else {
    r.body = content;
  }
  return r;
}

class HttpTestServer {
 public:
  using Handler = std::function<Response(const Request&)>;

  explicit HttpTestServer(Handler handler) : handler_(std::move(handler)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;  // any free port
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listen_fd_, 8) != 0)
      throw std::runtime_error("test server: cannot listen on 127.0.0.1");
    socklen_t len = sizeof addr;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~HttpTestServer() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
  }

  int port() const { return port_; }
  std::string url(const std::string& host = "127.0.0.1") const { return "http://" + host + ":" + std::to_string(port_); }
  std::vector<Request> requests() {
    std::lock_guard<std::mutex> lock(mutex_);
    return requests_;
  }

 private:
  void serve() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) continue;
      handle(fd);
      ::close(fd);
    }
  }

  void handle(int fd) {
    std::string head;
    char buf[4096];
    while (head.find("\r\n\r\n") == std::string::npos) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return;
      head.append(buf, size_t(n));
    }
    Request req;
    const size_t line_end = head.find("\r\n");
    const std::string line = head.substr(0, line_end);  // GET /path?query HTTP/1.1
    const size_t s1 = line.find(' '), s2 = line.rfind(' ');
    const std::string target = line.substr(s1 + 1, s2 - s1 - 1);
    req.path = target.substr(0, target.find('?'));
    if (target.find('?') != std::string::npos) req.query = target.substr(target.find('?') + 1);
    size_t pos = line_end + 2;
    while (pos < head.size()) {
      const size_t end = head.find("\r\n", pos);
      if (end == pos || end == std::string::npos) break;
      const std::string h = head.substr(pos, end - pos);
      const size_t colon = h.find(':');
      if (colon != std::string::npos) {
        std::string name = h.substr(0, colon);
        for (char& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
        req.headers[name] = h.substr(h.find_first_not_of(' ', colon + 1));
      }
      pos = end + 2;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      requests_.push_back(req);
    }
    const Response r = handler_(req);
    std::string out = "HTTP/1.1 " + std::to_string(r.status) + " X\r\nContent-Length: " + std::to_string(r.body.size()) +
                      "\r\nConnection: close\r\n";
    for (const auto& [k, v] : r.headers) out += k + ": " + v + "\r\n";
    out += "\r\n";
    out += r.body.substr(0, std::min(r.drop_after, r.body.size()));
    size_t sent = 0;
    while (sent < out.size()) {
      const ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return;
      sent += size_t(n);
    }
  }

  Handler handler_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mutex_;
  std::vector<Request> requests_;
};

}  // namespace chroma::net::testing
