// HTTP GET over libcurl, for the model downloader (net/hub.h). Redirects are followed (the Hub sends LFS
// files to a CDN); the Authorization header is only sent to the host it was meant for (libcurl drops
// custom Authorization headers on a redirect to another host or port). Network code stays in this module.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace chroma::net {

struct HttpOptions {
  std::string token;             // sent as "Authorization: Bearer <token>" when set
  long connect_timeout_s = 20;   // giving up on a server that does not answer
  long stall_timeout_s = 60;     // a transfer with no byte for this long counts as interrupted
};

// How one request ended.
enum class HttpFailure {
  None,         // a complete response arrived (any status)
  Connect,      // no connection: host unknown, refused, unreachable, TLS handshake failed
  Interrupted,  // the connection dropped or stalled before the whole body arrived
  Aborted,      // the body sink returned false (e.g. the disk is full)
};

struct HttpResult {
  long status = 0;            // status of the final response (after redirects); 0 when none arrived
  HttpFailure failure = HttpFailure::None;
  std::string error;          // libcurl's reason when failure != None
  std::string error_body;     // the first KiB of a non-2xx response body (the Hub explains errors there)
  uint64_t range_start = 0;   // first byte of a 206 response (its Content-Range)
  std::string next_link;      // the URL of a `Link: <url>; rel="next"` header (paginated API listings)
};

// Receives the body of a 2xx response chunk by chunk; `status` and `range_start` are final when it is
// first called. Return false to stop the transfer (the result is then HttpFailure::Aborted).
using BodySink = std::function<bool(const HttpResult& head, const char* data, size_t n)>;

// GET `url`, asking for bytes from `offset` on when offset > 0 (a Range request: the server answers 206,
// or 200 with the whole body if it ignores ranges). Never throws for network errors: see HttpResult.
HttpResult http_get(const std::string& url, const HttpOptions& options, const BodySink& sink, uint64_t offset = 0);

// GET a small body (API JSON) into memory.
HttpResult http_get_text(const std::string& url, const HttpOptions& options, std::string& body);

// "owner/name" and file paths inside URLs: each character outside [A-Za-z0-9-._~/] percent-encoded
// ('/' kept unless `keep_slash` is false, as for a revision like "refs/pr/1").
std::string url_encode(const std::string& s, bool keep_slash = true);

}  // namespace chroma::net
