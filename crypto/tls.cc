#include "crypto/tls.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>

#include <algorithm>
#include <asio/experimental/as_tuple.hpp>
#include <asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>
#include <map>

#include "crypto/secure.h"

namespace socksgate::crypto {
namespace {

constexpr auto kUse = asio::experimental::as_tuple(asio::use_awaitable);

// Mozilla "intermediate" (TLS 1.2 part): forward secrecy and AEAD only.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
constexpr const char* kTls13Suites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
constexpr const char* kGroups = "X25519:prime256v1:secp384r1";

std::string hex(const uint8_t* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(d[p[i] >> 4]);
    out.push_back(d[p[i] & 15]);
  }
  return out;
}

// The oldest queued OpenSSL error as one line ("no shared cipher"); clears the queue.
std::string openssl_error(std::string_view fallback) {
  unsigned long e = ERR_get_error();
  std::string out;
  if (e != 0) {
    const char* r = ERR_reason_error_string(e);
    if (ERR_SYSTEM_ERROR(e)) {
      out = std::strerror(ERR_GET_REASON(e));
    } else if (r != nullptr) {
      out = r;
    } else {
      char buf[256];
      ERR_error_string_n(e, buf, sizeof buf);
      out = buf;
    }
  } else {
    out = std::string(fallback);
  }
  ERR_clear_error();
  return out;
}

[[noreturn]] void throw_tls(const std::string& what) {
  std::string detail = openssl_error("");
  throw TlsError(detail.empty() ? what : what + ": " + detail);
}

int ring_index() {
  static const int idx = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return idx;
}
int client_ctx_index() {
  static const int idx = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return idx;
}

bool set_ticket_mac_key(EVP_MAC_CTX* hctx, std::array<uint8_t, 32>& key) {
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key.data(), key.size()),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end()};
  return EVP_MAC_CTX_set_params(hctx, params) == 1;
}

// RFC 5077 ticket protection with our rotating keys: AES-256-CBC + HMAC-SHA256, as OpenSSL's
// own default does, but with keys we rotate and share across reloads.
int ticket_key_cb(SSL* s, unsigned char key_name[16], unsigned char* iv, EVP_CIPHER_CTX* cctx,
                  EVP_MAC_CTX* hctx, int enc) {
  auto* ring = static_cast<TicketKeyRing*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), ring_index()));
  if (ring == nullptr) return -1;
  if (enc) {
    TicketKeyRing::Key k = ring->current();
    std::memcpy(key_name, k.name.data(), k.name.size());
    int ok = RAND_bytes(iv, 16) == 1 &&
             EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), nullptr, k.aes.data(), iv) == 1 &&
             set_ticket_mac_key(hctx, k.hmac);
    secure_zero(&k, sizeof k);
    return ok ? 1 : -1;
  }
  bool renew = false;
  auto k = ring->find(key_name, &renew);
  if (!k) return 0;  // unknown or retired key: full handshake
  int ok = EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), nullptr, k->aes.data(), iv) == 1 &&
           set_ticket_mac_key(hctx, k->hmac);
  secure_zero(&*k, sizeof *k);
  if (!ok) return -1;
  // Always ask for a fresh ticket: a client then never presents the same ticket twice
  // (unlinkable sessions), and TLS 1.3 clients always hold a usable one.
  (void)renew;
  return 2;
}

// Common protocol policy for both sides.
void apply_protocol_policy(SSL_CTX* ctx, TlsProfile profile) {
  if (SSL_CTX_set_min_proto_version(
          ctx, profile == TlsProfile::kModern ? TLS1_3_VERSION : TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) {
    throw_tls("cannot restrict protocol versions");
  }
  SSL_CTX_set_options(
      ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
  if (SSL_CTX_set_cipher_list(ctx, kTls12Ciphers) != 1) throw_tls("cannot set TLS 1.2 ciphers");
  if (SSL_CTX_set_ciphersuites(ctx, kTls13Suites) != 1) throw_tls("cannot set TLS 1.3 suites");
  if (SSL_CTX_set1_groups_list(ctx, kGroups) != 1) throw_tls("cannot set key exchange groups");
  // Idle sessions hold no record buffers; partial writes let write_all resume where it was.
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // Read ahead: one read(2) brings in as many records as the buffer holds, instead of two
  // reads (header, body) per record.
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, 64 * 1024);
}

void load_cert_and_key(SSL_CTX* ctx, const std::string& cert, const std::string& key) {
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) {
    throw_tls(cert + ": cannot load certificate chain");
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
      ERR_clear_error();
      throw TlsError(key + ": private key does not match the certificate in " + cert);
    }
    throw_tls(key + ": cannot load private key");
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    throw TlsError(key + ": private key does not match the certificate in " + cert);
  }
}

std::vector<X509_CRL*> read_crls(const std::string& file) {
  BIO* bio = BIO_new_file(file.c_str(), "r");
  if (bio == nullptr) throw_tls(file + ": cannot open CRL file");
  std::vector<X509_CRL*> out;
  while (X509_CRL* crl = PEM_read_bio_X509_CRL(bio, nullptr, nullptr, nullptr)) {
    out.push_back(crl);
  }
  BIO_free(bio);
  unsigned long e = ERR_peek_last_error();
  if (ERR_GET_REASON(e) == PEM_R_NO_START_LINE) ERR_clear_error();  // normal end of file
  if (ERR_peek_error() != 0 || out.empty()) {
    for (auto* c : out) X509_CRL_free(c);
    throw_tls(file + ": no valid PEM CRL in file");
  }
  return out;
}

std::string name_rfc2253(const X509_NAME* name) {
  BIO* bio = BIO_new(BIO_s_mem());
  X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<size_t>(n > 0 ? n : 0));
  BIO_free(bio);
  return out;
}

// The bytes of an ASN.1 string, refusing embedded NULs (a classic certificate-name spoof).
std::optional<std::string> exact_bytes(const ASN1_STRING* s, bool to_utf8, std::string* err) {
  std::string out;
  if (to_utf8) {
    unsigned char* utf8 = nullptr;
    int n = ASN1_STRING_to_UTF8(&utf8, s);
    if (n < 0) {
      *err = "name is not a valid string";
      return std::nullopt;
    }
    out.assign(reinterpret_cast<const char*>(utf8), static_cast<size_t>(n));
    OPENSSL_free(utf8);
  } else {
    out.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
               static_cast<size_t>(ASN1_STRING_length(s)));
  }
  if (out.find('\0') != std::string::npos) {
    *err = "name contains a NUL byte";
    return std::nullopt;
  }
  if (out.empty()) {
    *err = "name is empty";
    return std::nullopt;
  }
  return out;
}

const char* identity_label(CertIdentity id) {
  switch (id) {
    case CertIdentity::kCommonName:
      return "subject CN";
    case CertIdentity::kSanEmail:
      return "email SAN";
    case CertIdentity::kSanDns:
      return "DNS SAN";
    case CertIdentity::kSanUri:
      return "URI SAN";
  }
  return "identity";
}

std::optional<std::string> map_identity(X509* cert, CertIdentity id, std::string* err) {
  std::vector<std::optional<std::string>> found;
  std::string why;
  if (id == CertIdentity::kCommonName) {
    const X509_NAME* subj = X509_get_subject_name(cert);
    for (int i = -1; (i = X509_NAME_get_index_by_NID(subj, NID_commonName, i)) >= 0;) {
      found.push_back(
          exact_bytes(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, i)), true, &why));
    }
  } else {
    int type = id == CertIdentity::kSanEmail ? GEN_EMAIL
               : id == CertIdentity::kSanDns ? GEN_DNS
                                             : GEN_URI;
    auto* gens =
        static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
    for (int i = 0; gens != nullptr && i < sk_GENERAL_NAME_num(gens); ++i) {
      const GENERAL_NAME* g = sk_GENERAL_NAME_value(gens, i);
      if (g->type != type) continue;
      found.push_back(exact_bytes(g->d.ia5, false, &why));
    }
    GENERAL_NAMES_free(gens);
  }
  if (found.empty()) {
    *err = std::string("certificate has no ") + identity_label(id);
    return std::nullopt;
  }
  if (found.size() > 1) {
    *err = std::string("certificate has several ") + identity_label(id) +
           " entries: the user is ambiguous";
    return std::nullopt;
  }
  if (!found[0]) {
    *err = std::string(identity_label(id)) + ": " + why;
    return std::nullopt;
  }
  return found[0];
}

}  // namespace

// --- TicketKeyRing ---------------------------------------------------------------------------

void TicketKeyRing::rotate_locked(std::chrono::steady_clock::time_point now) {
  Key k;
  random_bytes(k.name);
  random_bytes(k.aes);
  random_bytes(k.hmac);
  k.created = now;
  keys_.insert(keys_.begin(), k);
  while (keys_.size() > 3) {
    secure_zero(&keys_.back(), sizeof(Key));
    keys_.pop_back();
  }
}

TicketKeyRing::Key TicketKeyRing::current(std::chrono::steady_clock::time_point now) {
  std::lock_guard lock(mu_);
  if (keys_.empty() || now - keys_.front().created >= period_) rotate_locked(now);
  return keys_.front();
}

std::optional<TicketKeyRing::Key> TicketKeyRing::find(const uint8_t* name, bool* renew,
                                                      std::chrono::steady_clock::time_point now) {
  std::lock_guard lock(mu_);
  for (size_t i = 0; i < keys_.size(); ++i) {
    const Key& k = keys_[i];
    if (std::memcmp(k.name.data(), name, k.name.size()) != 0) continue;
    if (now - k.created >= 3 * period_) return std::nullopt;  // retired
    *renew = i != 0 || now - k.created >= period_;
    return k;
  }
  return std::nullopt;
}

void TicketKeyRing::set_period(std::chrono::seconds p) {
  std::lock_guard lock(mu_);
  period_ = p;
}

std::shared_ptr<TicketKeyRing> TicketKeyRing::for_listener(const std::string& listener,
                                                           std::chrono::seconds period) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<TicketKeyRing>> rings;
  std::lock_guard lock(mu);
  auto& r = rings[listener];
  if (!r) {
    r = std::make_shared<TicketKeyRing>(period);
  } else {
    r->set_period(period);
  }
  return r;
}

// --- server context --------------------------------------------------------------------------

std::shared_ptr<const TlsServerContext> TlsServerContext::create(const TlsServerSettings& s) {
  std::shared_ptr<TlsServerContext> c(new TlsServerContext());
  c->settings_ = s;
  ERR_clear_error();
  c->ctx_ = SSL_CTX_new(TLS_server_method());
  if (c->ctx_ == nullptr) throw_tls("cannot create TLS context");
  SSL_CTX* ctx = c->ctx_;
  apply_protocol_policy(ctx, s.profile);
  load_cert_and_key(ctx, s.cert_file, s.key_file);
  c->spki_sha256_ = spki_sha256_hex(SSL_CTX_get0_certificate(ctx));

  // Resumption: stateless tickets only (no server-side cache to grow), keys from our ring.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  auto sid =
      hmac_sha256(std::span<const uint8_t>(),
                  std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.listener.data()),
                                           s.listener.size()));
  SSL_CTX_set_session_id_context(ctx, sid.data(), SSL_MAX_SID_CTX_LENGTH);
  if (s.session_tickets) {
    c->tickets_ = TicketKeyRing::for_listener(s.listener, s.ticket_rotation);
    SSL_CTX_set_ex_data(ctx, ring_index(), c->tickets_.get());
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
    SSL_CTX_set_timeout(ctx, static_cast<long>(2 * s.ticket_rotation.count()));
    SSL_CTX_set_num_tickets(ctx, 1);
  } else {
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 0);
  }
  SSL_CTX_set_max_early_data(ctx, 0);

  if (s.client_cert != ClientCertMode::kNone) {
    if (SSL_CTX_load_verify_locations(ctx, s.ca_file.c_str(), nullptr) != 1) {
      throw_tls(s.ca_file + ": cannot load CA bundle");
    }
    STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(s.ca_file.c_str());
    if (names == nullptr) throw_tls(s.ca_file + ": no CA certificate in bundle");
    SSL_CTX_set_client_CA_list(ctx, names);
    int mode = SSL_VERIFY_PEER;
    if (s.client_cert == ClientCertMode::kRequired) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx, mode, nullptr);
    SSL_CTX_set_verify_depth(ctx, s.verify_depth);
    // Client certificates must be meant for client authentication (EKU clientAuth if the
    // certificate restricts its use at all).
    SSL_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
    if (!s.crl_file.empty()) {
      c->crls_ = read_crls(s.crl_file);
      X509_STORE* store = SSL_CTX_get_cert_store(ctx);
      for (X509_CRL* crl : c->crls_) X509_STORE_add_crl(store, crl);
      X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    }
  }
  ERR_clear_error();
  return c;
}

TlsServerContext::~TlsServerContext() {
  for (X509_CRL* crl : crls_) X509_CRL_free(crl);
  SSL_CTX_free(ctx_);
}

bool TlsServerContext::still_acceptable(X509* leaf, std::string* why) const {
  if (X509_cmp_current_time(X509_get0_notAfter(leaf)) <= 0) {
    *why = "certificate has expired";
    return false;
  }
  for (X509_CRL* crl : crls_) {
    if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_issuer_name(leaf)) != 0) continue;
    X509_REVOKED* rev = nullptr;
    if (X509_CRL_get0_by_cert(crl, &rev, leaf) == 1) {
      *why = "certificate revoked";
      return false;
    }
  }
  return true;
}

// --- client context --------------------------------------------------------------------------

namespace {
int new_client_session_cb(SSL* ssl, SSL_SESSION* sess) {
  auto* c =
      static_cast<TlsClientContext*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), client_ctx_index()));
  if (c == nullptr) return 0;
  c->store_session(sess);  // takes the reference OpenSSL hands us
  return 1;
}
}  // namespace

std::shared_ptr<TlsClientContext> TlsClientContext::create(const TlsClientSettings& s) {
  std::shared_ptr<TlsClientContext> c(new TlsClientContext());
  c->settings_ = s;
  ERR_clear_error();
  c->ctx_ = SSL_CTX_new(TLS_client_method());
  if (c->ctx_ == nullptr) throw_tls("cannot create TLS context");
  apply_protocol_policy(c->ctx_, s.profile);
  if (s.ca_file.empty() && s.pin_sha256.empty()) {
    throw TlsError("the gateway's certificate must be verified: give a CA file or a key pin");
  }
  if (!s.ca_file.empty() &&
      SSL_CTX_load_verify_locations(c->ctx_, s.ca_file.c_str(), nullptr) != 1) {
    throw_tls(s.ca_file + ": cannot load CA bundle");
  }
  if (!s.cert_file.empty()) load_cert_and_key(c->ctx_, s.cert_file, s.key_file);
  SSL_CTX_set_session_cache_mode(c->ctx_, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_set_ex_data(c->ctx_, client_ctx_index(), c.get());
  SSL_CTX_sess_set_new_cb(c->ctx_, new_client_session_cb);
  ERR_clear_error();
  return c;
}

TlsClientContext::~TlsClientContext() {
  if (session_) SSL_SESSION_free(session_);
  SSL_CTX_free(ctx_);
}

SSL_SESSION* TlsClientContext::take_session() {
  std::lock_guard lock(mu_);
  if (session_ == nullptr) return nullptr;
  if (SSL_SESSION_is_resumable(session_) != 1) return nullptr;
  SSL_SESSION_up_ref(session_);
  return session_;
}

void TlsClientContext::store_session(SSL_SESSION* s) {
  std::lock_guard lock(mu_);
  if (session_) SSL_SESSION_free(session_);
  session_ = s;
}

// --- errors ----------------------------------------------------------------------------------

namespace {
class TlsCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "tls"; }
  std::string message(int ev) const override {
    switch (static_cast<TlsErrc>(ev)) {
      case TlsErrc::kHandshakeFailed:
        return "TLS handshake failed";
      case TlsErrc::kProtocol:
        return "TLS protocol error";
      case TlsErrc::kPeerVerifyFailed:
        return "TLS peer verification failed";
      case TlsErrc::kRevoked:
        return "TLS client certificate no longer acceptable";
    }
    return "TLS error";
  }
};
}  // namespace

const std::error_category& tls_category() {
  static const TlsCategory c;
  return c;
}

// --- channel ---------------------------------------------------------------------------------

namespace {

// OpenSSL's socket BIO, except that a write says MSG_MORE while the channel has further records
// of the same write_all() to send (`*more`, a flag the channel owns). Without it, each 16 KiB
// record goes out as its own segment and wakes the reader; with it, the kernel sends full
// segments and pushes when the last record of a burst arrives. Reads are the socket BIO's.
int write_with_more(BIO* b, const char* data, int len) {
  const bool* more = static_cast<const bool*>(BIO_get_data(b));
  int fd = static_cast<int>(BIO_get_fd(b, nullptr));
  errno = 0;
  ssize_t n = ::send(fd, data, static_cast<size_t>(len),
                     MSG_NOSIGNAL | ((more != nullptr && *more) ? MSG_MORE : 0));
  BIO_clear_retry_flags(b);
  if (n <= 0 && BIO_sock_should_retry(static_cast<int>(n))) BIO_set_retry_write(b);
  return static_cast<int>(n);
}

const BIO_METHOD* socket_bio_with_more() {
  static BIO_METHOD* method = [] {
    const BIO_METHOD* base = BIO_s_socket();
    BIO_METHOD* m = BIO_meth_new(BIO_TYPE_SOCKET, "socket, MSG_MORE between records");
    if (m == nullptr) return m;
    BIO_meth_set_write(m, write_with_more);
    BIO_meth_set_read(m, BIO_meth_get_read(base));
    BIO_meth_set_puts(m, BIO_meth_get_puts(base));
    BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(base));
    BIO_meth_set_create(m, BIO_meth_get_create(base));
    BIO_meth_set_destroy(m, BIO_meth_get_destroy(base));
    return m;
  }();
  return method;
}

// SSL_set_fd with the BIO above (or OpenSSL's own, should that one not be made).
void attach_socket(SSL* ssl, int fd, const bool* more) {
  const BIO_METHOD* m = socket_bio_with_more();
  BIO* bio = m ? BIO_new(m) : nullptr;
  if (bio == nullptr) {
    SSL_set_fd(ssl, fd);
    return;
  }
  BIO_set_fd(bio, fd, BIO_NOCLOSE);
  BIO_set_data(bio, const_cast<bool*>(more));
  SSL_set_bio(ssl, bio, bio);  // one reference for both directions
}

}  // namespace

TlsChannel::TlsChannel(asio::ip::tcp::socket socket, std::shared_ptr<const TlsServerContext> ctx)
    : socket_(std::move(socket)), server_ctx_(std::move(ctx)) {
  ssl_ = SSL_new(server_ctx_->native());
  std::error_code ec;
  socket_.native_non_blocking(true, ec);
  if (ssl_) {
    attach_socket(ssl_, socket_.native_handle(), &more_records_);
    SSL_set_accept_state(ssl_);
  }
}

TlsChannel::TlsChannel(asio::ip::tcp::socket socket, std::shared_ptr<TlsClientContext> ctx)
    : socket_(std::move(socket)), client_ctx_(std::move(ctx)) {
  ssl_ = SSL_new(client_ctx_->native());
  std::error_code ec;
  socket_.native_non_blocking(true, ec);
  if (!ssl_) return;
  attach_socket(ssl_, socket_.native_handle(), &more_records_);
  SSL_set_connect_state(ssl_);
  const auto& s = client_ctx_->settings();
  bool is_ip = false;
  {
    asio::error_code aec;
    asio::ip::make_address(s.server_name, aec);
    is_ip = !aec;
  }
  if (!s.server_name.empty() && !is_ip) SSL_set_tlsext_host_name(ssl_, s.server_name.c_str());
  if (!s.ca_file.empty()) {
    SSL_set_verify(ssl_, SSL_VERIFY_PEER, nullptr);
    X509_VERIFY_PARAM* vp = SSL_get0_param(ssl_);
    if (is_ip) {
      X509_VERIFY_PARAM_set1_ip_asc(vp, s.server_name.c_str());
    } else {
      SSL_set1_host(ssl_, s.server_name.c_str());
    }
  } else {
    SSL_set_verify(ssl_, SSL_VERIFY_NONE, nullptr);  // the key pin decides, after the handshake
  }
  if (SSL_SESSION* sess = client_ctx_->take_session()) {
    SSL_set_session(ssl_, sess);
    SSL_SESSION_free(sess);
  }
}

TlsChannel::~TlsChannel() {
  if (ssl_ == nullptr) return;
  // SSL_free of a connection that was not shut down marks its session not resumable. A session
  // that ended without a TLS error may be resumed (the agent reconnects with it); one that
  // failed stays unusable (OpenSSL already marked it on the fatal alert).
  if (!failed_ && SSL_is_init_finished(ssl_)) {
    SSL_set_shutdown(ssl_, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  }
  SSL_free(ssl_);
}

asio::awaitable<std::error_code> TlsChannel::wait_for(int ssl_error) {
  auto what = ssl_error == SSL_ERROR_WANT_WRITE ? asio::socket_base::wait_write
                                                : asio::socket_base::wait_read;
  auto [ec] = co_await socket_.async_wait(what, kUse);
  co_return ec;
}

std::error_code TlsChannel::fail(int ssl_error, TlsErrc what) {
  int saved_errno = errno;
  failed_ = true;
  long vr = ssl_ ? SSL_get_verify_result(ssl_) : X509_V_OK;
  if (ssl_error == SSL_ERROR_SYSCALL) {
    std::string q = openssl_error("");
    if (!q.empty()) {
      last_error_ = q;
    } else if (saved_errno == ECONNRESET || saved_errno == EPIPE) {
      last_error_ = "connection reset by peer";
      ERR_clear_error();
      return asio::error::connection_reset;
    } else if (saved_errno != 0) {
      last_error_ = std::strerror(saved_errno);
    } else {
      last_error_ = "connection closed by peer";
      return asio::error::eof;
    }
  } else if (vr != X509_V_OK && what == TlsErrc::kHandshakeFailed) {
    last_error_ = std::string("certificate verify failed: ") + X509_verify_cert_error_string(vr);
    ERR_clear_error();
  } else {
    last_error_ = openssl_error("TLS error");
  }
  return what;
}

asio::awaitable<std::error_code> TlsChannel::handshake() {
  if (ssl_ == nullptr) {
    last_error_ = "cannot create TLS session";
    co_return TlsErrc::kHandshakeFailed;
  }
  for (;;) {
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(ssl_);
    if (r == 1) break;
    int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      if (std::error_code ec = co_await wait_for(e)) {
        last_error_ = ec.message();
        co_return ec;
      }
      continue;
    }
    std::error_code ec = fail(e, TlsErrc::kHandshakeFailed);
    if (ec == asio::error::eof) last_error_ = "connection closed during the TLS handshake";
    co_return ec;
  }
  co_return server_ctx_ ? after_server_handshake() : after_client_handshake();
}

std::error_code TlsChannel::after_server_handshake() {
  X509* peer = SSL_get0_peer_certificate(ssl_);
  if (peer == nullptr) return {};
  if (SSL_session_reused(ssl_) == 1) {
    std::string why;
    if (!server_ctx_->still_acceptable(peer, &why)) {
      last_error_ = "resumed session: " + why;
      return TlsErrc::kRevoked;
    }
  }
  client_cert_ = describe_certificate(peer, server_ctx_->settings().identity);
  return {};
}

std::error_code TlsChannel::after_client_handshake() {
  const auto& pin = client_ctx_->settings().pin_sha256;
  if (pin.empty()) return {};
  X509* peer = SSL_get0_peer_certificate(ssl_);
  if (peer == nullptr || !constant_time_equal(spki_sha256_hex(peer), pin)) {
    last_error_ = "the gateway's public key does not match the pinned SHA-256";
    return TlsErrc::kPeerVerifyFailed;
  }
  return {};
}

asio::awaitable<std::pair<std::error_code, size_t>> TlsChannel::read_some_raw(
    std::span<uint8_t> buf) {
  for (;;) {
    ERR_clear_error();
    errno = 0;
    size_t n = 0;
    int r = SSL_read_ex(ssl_, buf.data(), buf.size(), &n);
    if (r == 1) {
      // Records already read ahead are decrypted now too: the relay then moves one big
      // chunk instead of one record at a time. (An error here shows up on the next call.)
      while (n < buf.size() && SSL_has_pending(ssl_) == 1) {
        size_t more = 0;
        if (SSL_read_ex(ssl_, buf.data() + n, buf.size() - n, &more) != 1) {
          ERR_clear_error();
          break;
        }
        n += more;
      }
      co_return std::pair{std::error_code{}, n};
    }
    int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      if (std::error_code ec = co_await wait_for(e)) co_return std::pair{ec, size_t{0}};
      continue;
    }
    if (e == SSL_ERROR_ZERO_RETURN)
      co_return std::pair{std::error_code(asio::error::eof), size_t{0}};
    co_return std::pair{fail(e, TlsErrc::kProtocol), size_t{0}};
  }
}

asio::awaitable<std::error_code> TlsChannel::write_all(std::span<const uint8_t> data) {
  while (!data.empty()) {
    ERR_clear_error();
    errno = 0;
    size_t n = 0;
    // One record per call; the BIO marks all but the last record of this burst MSG_MORE.
    size_t record = std::min<size_t>(data.size(), SSL3_RT_MAX_PLAIN_LENGTH);
    more_records_ = data.size() > record;
    int r = SSL_write_ex(ssl_, data.data(), record, &n);
    more_records_ = false;
    if (r == 1) {
      data = data.subspan(n);
      continue;
    }
    int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      if (std::error_code ec = co_await wait_for(e)) co_return ec;
      continue;
    }
    std::error_code ec = fail(e, TlsErrc::kProtocol);
    if (ec == asio::error::eof) ec = asio::error::broken_pipe;
    co_return ec;
  }
  co_return std::error_code{};
}

std::error_code TlsChannel::shutdown_send() {
  if (!sent_shutdown_ && ssl_) {
    sent_shutdown_ = true;
    ERR_clear_error();
    SSL_shutdown(ssl_);  // close_notify; best effort on a non-blocking socket
    ERR_clear_error();
  }
  std::error_code ec;
  socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
  return ec;
}

void TlsChannel::close() {
  std::error_code ec;
  socket_.close(ec);
}

void TlsChannel::reset() {
  std::error_code ec;
  socket_.set_option(asio::socket_base::linger(true, 0), ec);
  socket_.close(ec);
}

std::string TlsChannel::version() const { return ssl_ ? SSL_get_version(ssl_) : ""; }
std::string TlsChannel::cipher() const {
  const char* c = ssl_ ? SSL_get_cipher_name(ssl_) : nullptr;
  return c ? c : "";
}
std::string TlsChannel::sni() const {
  const char* s = ssl_ ? SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name) : nullptr;
  return s ? s : "";
}
bool TlsChannel::has_buffered() const {
  return Channel::has_buffered() ||
         (ssl_ != nullptr && (SSL_pending(ssl_) > 0 || SSL_has_pending(ssl_) == 1));
}

bool TlsChannel::resumed() const { return ssl_ && SSL_session_reused(ssl_) == 1; }

std::vector<uint8_t> TlsChannel::channel_binding() const {
  if (ssl_ == nullptr || !SSL_is_init_finished(ssl_)) return {};
  std::vector<uint8_t> out;
  if (SSL_version(ssl_) >= TLS1_3_VERSION) {
    // RFC 9266: 32 bytes exported with the label "EXPORTER-Channel-Binding" and no context.
    static constexpr std::string_view kPrefix = "tls-exporter:";
    static constexpr std::string_view kLabel = "EXPORTER-Channel-Binding";
    out.assign(kPrefix.begin(), kPrefix.end());
    out.resize(kPrefix.size() + 32);
    if (SSL_export_keying_material(ssl_, out.data() + kPrefix.size(), 32, kLabel.data(),
                                   kLabel.size(), nullptr, 0, 0) != 1) {
      return {};
    }
    return out;
  }
  // RFC 5929 tls-server-end-point: the server certificate hashed with its signature's hash
  // function, SHA-256 when that is MD5, SHA-1 or undefined (EdDSA).
  X509* cert = server_ctx_ ? SSL_get_certificate(ssl_) : SSL_get0_peer_certificate(ssl_);
  if (cert == nullptr) return {};
  int md_nid = NID_undef;
  if (X509_get_signature_info(cert, &md_nid, nullptr, nullptr, nullptr) != 1) md_nid = NID_undef;
  const EVP_MD* md = nullptr;
  if (md_nid != NID_undef && md_nid != NID_md5 && md_nid != NID_sha1)
    md = EVP_get_digestbynid(md_nid);
  if (md == nullptr) md = EVP_sha256();
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert, md, digest, &len) != 1) return {};
  static constexpr std::string_view kPrefix = "tls-server-end-point:";
  out.assign(kPrefix.begin(), kPrefix.end());
  out.insert(out.end(), digest, digest + len);
  return out;
}

// --- certificates ----------------------------------------------------------------------------

std::string spki_sha256_hex(X509* cert) {
  if (cert == nullptr) return "";
  unsigned char* der = nullptr;
  int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
  if (n <= 0) return "";
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  EVP_Digest(der, static_cast<size_t>(n), md, &mdlen, EVP_sha256(), nullptr);
  OPENSSL_free(der);
  return hex(md, mdlen);
}

std::string cert_sha256_hex(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  if (X509_digest(cert, EVP_sha256(), md, &mdlen) != 1) return "";
  return hex(md, mdlen);
}

ClientCertInfo describe_certificate(X509* cert, CertIdentity identity) {
  ClientCertInfo info;
  info.subject = name_rfc2253(X509_get_subject_name(cert));
  info.issuer = name_rfc2253(X509_get_issuer_name(cert));
  info.sha256 = cert_sha256_hex(cert);
  if (BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr)) {
    if (char* h = BN_bn2hex(bn)) {
      info.serial = h;
      OPENSSL_free(h);
    }
    BN_free(bn);
  }
  info.user = map_identity(cert, identity, &info.identity_error);
  ERR_clear_error();
  return info;
}

}  // namespace socksgate::crypto
