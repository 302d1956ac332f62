#pragma once
// TLS for listeners (server side) and for the agent (client side), on OpenSSL 3.
//
// - Contexts are immutable once built and shared (`shared_ptr<const ...>`): a reload builds new
//   ones and swaps them in with the rest of the config snapshot; running sessions keep theirs.
//   Building checks everything an admin can get wrong (unreadable files, a key that does not
//   match its certificate, a CA bundle without certificates) and throws TlsError with a
//   one-line reason, so a bad reload keeps the old pair.
// - Policy: TLS 1.2 and 1.3 only; "intermediate" = Mozilla's intermediate suites (ECDHE with
//   AES-GCM or ChaCha20-Poly1305, plus the TLS 1.3 suites), "modern" = TLS 1.3 only. No
//   renegotiation, no compression, no 0-RTT (early data is never enabled). Resumption by
//   stateless tickets whose keys rotate (TicketKeyRing), X25519 preferred.
// - TlsChannel is a crypto::Channel over a non-blocking socket: OpenSSL reads and writes the
//   descriptor itself (no extra copy through memory BIOs) and the coroutine waits for
//   readiness only when OpenSSL says WANT_READ / WANT_WRITE, i.e. after the kernel said EAGAIN.

#include <openssl/ssl.h>

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "crypto/channel.h"

namespace socksgate::crypto {

class TlsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class TlsProfile { kIntermediate, kModern };
enum class ClientCertMode { kNone, kOptional, kRequired };
// Where a client certificate's user name comes from.
enum class CertIdentity { kCommonName, kSanEmail, kSanDns, kSanUri };

// Session-ticket keys: one current key encrypts new tickets, the previous ones still decrypt
// (and ask for a fresh ticket). Rotated every `period`; a key lives 3 periods in all, which
// bounds how long a resumed session can outlive a full handshake. Thread-safe. One ring per
// listener name for the life of the process, so tickets survive config reloads.
class TicketKeyRing {
 public:
  struct Key {
    std::array<uint8_t, 16> name;
    std::array<uint8_t, 32> aes;
    std::array<uint8_t, 32> hmac;
    std::chrono::steady_clock::time_point created;
  };
  explicit TicketKeyRing(std::chrono::seconds period) : period_(period) {}
  // The key new tickets use (rotating first if it is due).
  Key current(std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());
  // The key named `name` if it is still accepted; `*renew` = it is not the current one.
  std::optional<Key> find(
      const uint8_t* name, bool* renew,
      std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());
  std::chrono::seconds period() const { return period_; }
  void set_period(std::chrono::seconds p);
  // The process-wide ring of a listener.
  static std::shared_ptr<TicketKeyRing> for_listener(const std::string& listener,
                                                     std::chrono::seconds period);

 private:
  void rotate_locked(std::chrono::steady_clock::time_point now);
  std::mutex mu_;
  std::chrono::seconds period_;
  std::vector<Key> keys_;  // newest first; at most 3
};

struct TlsServerSettings {
  std::string listener;   // names the ticket ring and the session id context
  std::string cert_file;  // PEM chain, leaf first
  std::string key_file;   // PEM private key
  TlsProfile profile = TlsProfile::kIntermediate;
  ClientCertMode client_cert = ClientCertMode::kNone;
  std::string ca_file;   // PEM bundle the client certificates must chain to
  std::string crl_file;  // PEM CRLs, checked for the client certificate; empty = none
  int verify_depth = 4;  // intermediate CAs allowed between the client certificate and `ca`
  CertIdentity identity = CertIdentity::kCommonName;
  bool session_tickets = true;
  std::chrono::seconds ticket_rotation{3600};
};

// What a verified client certificate says, for policy and audit.
struct ClientCertInfo {
  std::string subject;              // RFC 2253 form
  std::string issuer;               // RFC 2253 form
  std::string sha256;               // lower-case hex of the DER certificate
  std::string serial;               // hex
  std::optional<std::string> user;  // the mapped identity, byte-exact; nullopt if none
  std::string identity_error;       // why there is none (no such SAN, embedded NUL, ...)
};

class TlsServerContext {
 public:
  static std::shared_ptr<const TlsServerContext> create(const TlsServerSettings& s);
  ~TlsServerContext();
  TlsServerContext(const TlsServerContext&) = delete;
  TlsServerContext& operator=(const TlsServerContext&) = delete;

  SSL_CTX* native() const { return ctx_; }
  const TlsServerSettings& settings() const { return settings_; }
  // For a resumed session, whose chain was verified when it was first established: is its
  // leaf still acceptable under this context's CRLs and validity period? (A ticket from
  // before a CRL reload must not let a revoked certificate back in.)
  bool still_acceptable(X509* leaf, std::string* why) const;
  // SHA-256 of the server certificate's SubjectPublicKeyInfo (what agents pin), hex.
  const std::string& spki_sha256() const { return spki_sha256_; }

 private:
  TlsServerContext() = default;
  SSL_CTX* ctx_ = nullptr;
  TlsServerSettings settings_;
  std::vector<X509_CRL*> crls_;
  std::shared_ptr<TicketKeyRing> tickets_;
  std::string spki_sha256_;
};

struct TlsClientSettings {
  std::string server_name;  // SNI and the name the certificate must carry (when verifying)
  std::string ca_file;      // verify the gateway's chain against this bundle
  std::string pin_sha256;   // or/and: the SHA-256 of its public key (SPKI), hex
  std::string cert_file;    // optional client certificate
  std::string key_file;
  TlsProfile profile = TlsProfile::kIntermediate;
};

class TlsClientContext {
 public:
  static std::shared_ptr<TlsClientContext> create(const TlsClientSettings& s);
  ~TlsClientContext();
  TlsClientContext(const TlsClientContext&) = delete;
  TlsClientContext& operator=(const TlsClientContext&) = delete;
  SSL_CTX* native() const { return ctx_; }
  const TlsClientSettings& settings() const { return settings_; }
  // The last session the gateway gave us, for resumption (thread-safe).
  SSL_SESSION* take_session();  // caller owns a reference, may be null
  void store_session(SSL_SESSION* s);

 private:
  TlsClientContext() = default;
  SSL_CTX* ctx_ = nullptr;
  TlsClientSettings settings_;
  std::mutex mu_;
  SSL_SESSION* session_ = nullptr;
};

// Errors of the TLS layer, as error codes (handshake and record failures).
enum class TlsErrc {
  kHandshakeFailed = 1,  // details in TlsChannel::last_error()
  kProtocol,             // a bad record after the handshake
  kPeerVerifyFailed,     // the peer's certificate or key pin did not verify
  kRevoked,              // a resumed session's certificate is no longer acceptable
};
const std::error_category& tls_category();
inline std::error_code make_error_code(TlsErrc e) { return {static_cast<int>(e), tls_category()}; }

}  // namespace socksgate::crypto

template <>
struct std::is_error_code_enum<socksgate::crypto::TlsErrc> : std::true_type {};

namespace socksgate::crypto {

class TlsChannel final : public Channel {
 public:
  // Server side.
  TlsChannel(asio::ip::tcp::socket socket, std::shared_ptr<const TlsServerContext> ctx);
  // Client side (the agent).
  TlsChannel(asio::ip::tcp::socket socket, std::shared_ptr<TlsClientContext> ctx);
  ~TlsChannel() override;
  TlsChannel(const TlsChannel&) = delete;  // the socket BIO points at more_records_
  TlsChannel& operator=(const TlsChannel&) = delete;

  // Runs the handshake. On failure last_error() says why in one line.
  asio::awaitable<std::error_code> handshake();

  asio::awaitable<std::error_code> write_all(std::span<const uint8_t> data) override;
  std::error_code shutdown_send() override;
  void close() override;
  void reset() override;
  asio::ip::tcp::socket* plain_socket() override { return nullptr; }
  asio::ip::tcp::socket& lowest_layer() override { return socket_; }
  bool has_buffered() const override;

  const std::string& last_error() const { return last_error_; }
  std::string version() const;  // "TLSv1.3"
  std::string cipher() const;   // "TLS_AES_128_GCM_SHA256"
  std::string sni() const;      // the server name the client asked for; empty if none
  bool resumed() const;
  // After the handshake; see Channel::channel_binding(). Empty if the data cannot be made (no
  // handshake yet, no server certificate).
  std::vector<uint8_t> channel_binding() const override;
  // The verified client certificate (server side), if the client presented one.
  const std::optional<ClientCertInfo>& client_cert() const { return client_cert_; }

 protected:
  asio::awaitable<std::pair<std::error_code, size_t>> read_some_raw(
      std::span<uint8_t> buf) override;

 private:
  asio::awaitable<std::error_code> wait_for(int ssl_error);
  std::error_code fail(int ssl_error, TlsErrc what);
  std::error_code after_server_handshake();
  std::error_code after_client_handshake();

  asio::ip::tcp::socket socket_;
  SSL* ssl_ = nullptr;
  std::shared_ptr<const TlsServerContext> server_ctx_;
  std::shared_ptr<TlsClientContext> client_ctx_;
  std::optional<ClientCertInfo> client_cert_;
  std::string last_error_;
  bool sent_shutdown_ = false;
  bool failed_ = false;        // a TLS error happened: the session must not be resumed
  bool more_records_ = false;  // read by the socket BIO: more records of this write follow
};

// Pure helpers (unit-tested without a handshake).
ClientCertInfo describe_certificate(X509* cert, CertIdentity identity);
std::string spki_sha256_hex(X509* cert);
std::string cert_sha256_hex(X509* cert);

}  // namespace socksgate::crypto
