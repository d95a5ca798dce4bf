#include "net/http.h"

#include <curl/curl.h>

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "tensor/error.h"

namespace chroma::net {
namespace {

// State shared with libcurl's callbacks during one transfer.
struct Transfer {
  HttpResult result;
  const BodySink* sink = nullptr;
  bool sink_stopped = false;
};

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// Headers of every response in a redirect chain pass through here; each status line starts afresh, so
// what remains describes the final response.
size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::string line(data, size * n);
  if (line.rfind("HTTP/", 0) == 0) {  // "HTTP/1.1 206 Partial Content"
    const size_t space = line.find(' ');
    t->result.status = space == std::string::npos ? 0 : std::atol(line.c_str() + space + 1);
    t->result.range_start = 0;
    t->result.next_link.clear();
    return size * n;
  }
  const size_t colon = line.find(':');
  if (colon == std::string::npos) return size * n;
  const std::string name = lower(trim(line.substr(0, colon))), value = trim(line.substr(colon + 1));
  if (name == "content-range") {
    // "bytes 100-199/200"
    unsigned long long start = 0;
    if (std::sscanf(value.c_str(), "bytes %llu-", &start) == 1) t->result.range_start = start;
  } else if (name == "link") {
    // <https://…?cursor=…>; rel="next"  (possibly among other comma-separated links)
    size_t pos = 0;
    while ((pos = value.find('<', pos)) != std::string::npos) {
      const size_t end = value.find('>', pos);
      if (end == std::string::npos) break;
      const size_t next = value.find('<', end);
      const std::string params = value.substr(end + 1, next == std::string::npos ? std::string::npos : next - end - 1);
      if (params.find("rel=\"next\"") != std::string::npos || params.find("rel=next") != std::string::npos)
        t->result.next_link = value.substr(pos + 1, end - pos - 1);
      pos = end;
    }
  }
  return size * n;
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t bytes = size * n;
  if (t->result.status < 200 || t->result.status >= 300) {
    // An error page: keep its start for the message, never pass it on as file content.
    if (t->result.error_body.size() < 1024) t->result.error_body.append(data, std::min(bytes, 1024 - t->result.error_body.size()));
    return bytes;
  }
  if (!(*t->sink)(t->result, data, bytes)) {
    t->sink_stopped = true;
    return 0;  // makes libcurl stop with CURLE_WRITE_ERROR
  }
  return bytes;
}

HttpFailure classify(CURLcode code) {
  switch (code) {
    case CURLE_OK: return HttpFailure::None;
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
      return HttpFailure::Connect;
    case CURLE_WRITE_ERROR: return HttpFailure::Aborted;
    default: return HttpFailure::Interrupted;  // partial file, receive error, stall timeout, …
  }
}

struct CurlHandle {
  CURL* curl;
  curl_slist* headers = nullptr;
  CurlHandle() : curl(curl_easy_init()) {
    if (!curl) throw Error("libcurl: cannot create a transfer handle");
  }
  ~CurlHandle() {
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
  }
};

}  // namespace

HttpResult http_get(const std::string& url, const HttpOptions& options, const BodySink& sink, uint64_t offset) {
  static std::once_flag init;
  std::call_once(init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });

  CurlHandle h;
  Transfer t;
  t.sink = &sink;
  char error[CURL_ERROR_SIZE] = "";
  if (!options.token.empty()) h.headers = curl_slist_append(h.headers, ("Authorization: Bearer " + options.token).c_str());
  const std::string range = std::to_string(offset) + "-";

  curl_easy_setopt(h.curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h.curl, CURLOPT_HTTPHEADER, h.headers);
  curl_easy_setopt(h.curl, CURLOPT_USERAGENT, "chromacpp/0.1");
  curl_easy_setopt(h.curl, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(h.curl, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(h.curl, CURLOPT_UNRESTRICTED_AUTH, 0L);  // the token stays with its host
  curl_easy_setopt(h.curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h.curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h.curl, CURLOPT_CONNECTTIMEOUT, options.connect_timeout_s);
  // No byte for stall_timeout_s seconds: the transfer is interrupted (and resumable).
  curl_easy_setopt(h.curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(h.curl, CURLOPT_LOW_SPEED_TIME, options.stall_timeout_s);
  curl_easy_setopt(h.curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h.curl, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(h.curl, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h.curl, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(h.curl, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h.curl, CURLOPT_WRITEDATA, &t);
  // CURLOPT_RANGE (not RESUME_FROM): a server that ignores ranges answers 200, which the caller handles.
  if (offset > 0) curl_easy_setopt(h.curl, CURLOPT_RANGE, range.c_str());

  const CURLcode code = curl_easy_perform(h.curl);
  curl_easy_getinfo(h.curl, CURLINFO_RESPONSE_CODE, &t.result.status);
  t.result.failure = t.sink_stopped ? HttpFailure::Aborted : classify(code);
  if (t.result.failure != HttpFailure::None) t.result.error = error[0] ? error : curl_easy_strerror(code);
  return t.result;
}

HttpResult http_get_text(const std::string& url, const HttpOptions& options, std::string& body) {
  body.clear();
  return http_get(url, options, [&](const HttpResult&, const char* data, size_t n) {
    body.append(data, n);
    return true;
  });
}

std::string url_encode(const std::string& s, bool keep_slash) {
  static const char* digits = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/')) {
      out += char(c);
    } else {
      out += '%';
      out += digits[c >> 4];
      out += digits[c & 15];
    }
  }
  return out;
}

}  // namespace chroma::net
