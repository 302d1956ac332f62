#include "crypto/gss_cfx.h"

#include <gssapi/gssapi_ext.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <ctime>

#include "crypto/aes_cbc_lanes.h"

namespace socksgate::crypto {
namespace {

// RFC 4121 section 4.2.2 flags and section 2 key usages; RFC 3961/3962 sizes.
constexpr uint8_t kFlagSentByAcceptor = 0x01;
constexpr uint8_t kFlagSealed = 0x02;
constexpr uint8_t kFlagAcceptorSubkey = 0x04;
constexpr uint32_t kUsageAcceptorSeal = 22;
constexpr uint32_t kUsageInitiatorSeal = 24;
constexpr size_t kHeader = 16;
constexpr size_t kConfounder = 16;  // the AES block
constexpr size_t kMac = 12;         // HMAC-SHA1-96
constexpr int32_t kAes128CtsHmacSha1 = 17;
constexpr int32_t kAes256CtsHmacSha1 = 18;

struct Enctype {
  const char* kdf_cipher;  // RFC 3961 DK's block cipher (CBC, zero IV: OpenSSL's KRB5KDF)
  const char* cts_cipher;  // RFC 3962 encryption: CBC with ciphertext stealing, CS3 variant
  size_t key_len;
};

const Enctype* find_enctype(int32_t e) {
  static const Enctype kAes128{"AES-128-CBC", "AES-128-CBC-CTS", 16};
  static const Enctype kAes256{"AES-256-CBC", "AES-256-CBC-CTS", 32};
  if (e == kAes128CtsHmacSha1) return &kAes128;
  if (e == kAes256CtsHmacSha1) return &kAes256;
  return nullptr;
}

void put_be16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void put_be64(uint8_t* p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<uint8_t>(v);
}
uint16_t get_be16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint64_t get_be64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | p[i];
  return v;
}

// RFC 3961 section 5.1: DK(base, usage | suffix), through OpenSSL's KRB5KDF.
bool derive(const Enctype& et, std::span<const uint8_t> base, uint32_t usage, uint8_t suffix,
            std::vector<uint8_t>* out) {
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "KRB5KDF", nullptr);
  if (kdf == nullptr) return false;
  EVP_KDF_CTX* kctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  if (kctx == nullptr) return false;
  uint8_t constant[5] = {static_cast<uint8_t>(usage >> 24), static_cast<uint8_t>(usage >> 16),
                         static_cast<uint8_t>(usage >> 8), static_cast<uint8_t>(usage), suffix};
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_CIPHER, const_cast<char*>(et.kdf_cipher), 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(base.data()),
                                        base.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_CONSTANT, constant, sizeof constant),
      OSSL_PARAM_construct_end()};
  out->assign(et.key_len, 0);
  bool ok = EVP_KDF_derive(kctx, out->data(), out->size(), params) == 1;
  EVP_KDF_CTX_free(kctx);
  return ok;
}

// RFC 3962's CBC-CTS is OpenSSL's CS3 variant, always with a zero IV.
const uint8_t kZeroIv[16] = {};
const OSSL_PARAM cs3_params[] = {
    OSSL_PARAM_construct_utf8_string(OSSL_CIPHER_PARAM_CTS_MODE, const_cast<char*>("CS3"), 0),
    OSSL_PARAM_construct_end()};

// The enctype of the key gss_wrap would use (MIT answers GSS_C_INQ_SSPI_SESSION_KEY with the
// acceptor subkey if there is one, else the context key, and the enctype as the last arc of
// 1.2.840.113554.1.2.2.4.<enctype>). -1 if the context does not say.
int32_t wrap_key_enctype(gss_ctx_id_t ctx) {
  static const uint8_t kPrefix[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02, 0x04};
  OM_uint32 minor = 0;
  gss_buffer_set_t set = GSS_C_NO_BUFFER_SET;
  OM_uint32 major = gss_inquire_sec_context_by_oid(&minor, ctx, GSS_C_INQ_SSPI_SESSION_KEY, &set);
  int32_t enctype = -1;
  if (!GSS_ERROR(major) && set != GSS_C_NO_BUFFER_SET && set->count >= 2) {
    const gss_buffer_desc& oid = set->elements[1];
    const auto* b = static_cast<const uint8_t*>(oid.value);
    // One more arc of one byte: enctypes below 128.
    if (oid.length == sizeof kPrefix + 1 && std::memcmp(b, kPrefix, sizeof kPrefix) == 0 &&
        b[sizeof kPrefix] < 0x80)
      enctype = b[sizeof kPrefix];
  }
  if (set != GSS_C_NO_BUFFER_SET) {
    // The key itself is in there: wipe it before the library frees it.
    for (size_t i = 0; i < set->count; ++i)
      OPENSSL_cleanse(set->elements[i].value, set->elements[i].length);
    gss_release_buffer_set(&minor, &set);
  }
  return enctype;
}

}  // namespace

// The keys of one (base key, key usage): Ke in a ready cipher context, Ki and Kc for HMAC.
struct DirectionKeys {
  const Enctype* et = nullptr;
  EVP_CIPHER_CTX* cipher = nullptr;
  std::unique_ptr<AesCtsLanes> lanes;  // sending side, where the CPU has AES-NI
  std::vector<uint8_t> ki, kc;

  DirectionKeys() = default;
  DirectionKeys(const DirectionKeys&) = delete;
  DirectionKeys& operator=(const DirectionKeys&) = delete;
  ~DirectionKeys() {
    EVP_CIPHER_CTX_free(cipher);
    OPENSSL_cleanse(ki.data(), ki.size());
    OPENSSL_cleanse(kc.data(), kc.size());
  }

  bool init(int32_t enctype, std::span<const uint8_t> base, uint32_t usage, bool encrypt) {
    et = find_enctype(enctype);
    if (et == nullptr || base.size() != et->key_len) return false;
    std::vector<uint8_t> ke;
    bool ok = derive(*et, base, usage, 0xAA, &ke) && derive(*et, base, usage, 0x55, &ki) &&
              derive(*et, base, usage, 0x99, &kc);
    EVP_CIPHER* c = ok ? EVP_CIPHER_fetch(nullptr, et->cts_cipher, nullptr) : nullptr;
    cipher = c != nullptr ? EVP_CIPHER_CTX_new() : nullptr;
    ok = cipher != nullptr &&
         EVP_CipherInit_ex2(cipher, c, ke.data(), kZeroIv, encrypt ? 1 : 0, cs3_params) == 1;
    EVP_CIPHER_free(c);
    if (ok && encrypt) lanes = AesCtsLanes::make(ke);
    OPENSSL_cleanse(ke.data(), ke.size());
    return ok;
  }
  bool usable() const { return cipher != nullptr; }

  // RFC 3962: AES-CBC-CTS (CS3) with a zero IV over the whole message, in one call.
  bool crypt(const uint8_t* in, size_t n, uint8_t* out) const {
    int outl = 0;
    return n >= 16 && n <= INT32_MAX &&
           EVP_CipherInit_ex2(cipher, nullptr, nullptr, kZeroIv, -1, cs3_params) == 1 &&
           EVP_CipherUpdate(cipher, out, &outl, in, static_cast<int>(n)) == 1 &&
           static_cast<size_t>(outl) == n;
  }
};

struct CfxProtector::Keys {
  EVP_MAC_CTX* mac = nullptr;  // HMAC-SHA1, keyed per message
  DirectionKeys send;
  DirectionKeys recv[2];  // [0] under the context key, [1] under the acceptor subkey

  Keys() = default;
  Keys(const Keys&) = delete;
  Keys& operator=(const Keys&) = delete;
  ~Keys() { EVP_MAC_CTX_free(mac); }

  bool init_mac() {
    EVP_MAC* m = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
    mac = m != nullptr ? EVP_MAC_CTX_new(m) : nullptr;
    EVP_MAC_free(m);
    OSSL_PARAM p[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, const_cast<char*>("SHA1"), 0),
        OSSL_PARAM_construct_end()};
    return mac != nullptr && EVP_MAC_CTX_set_params(mac, p) == 1;
  }

  // HMAC-SHA1-96(key, a || b) into out[0..12).
  bool hmac96(const std::vector<uint8_t>& key, std::span<const uint8_t> a,
              std::span<const uint8_t> b, uint8_t* out) {
    uint8_t full[EVP_MAX_MD_SIZE];
    size_t n = 0;
    bool ok = EVP_MAC_init(mac, key.data(), key.size(), nullptr) == 1 &&
              (a.empty() || EVP_MAC_update(mac, a.data(), a.size()) == 1) &&
              (b.empty() || EVP_MAC_update(mac, b.data(), b.size()) == 1) &&
              EVP_MAC_final(mac, full, &n, sizeof full) == 1 && n >= kMac;
    if (ok) std::memcpy(out, full, kMac);
    return ok;
  }
};

const char* CfxProtector::result_text(Result r) {
  switch (r) {
    case Result::kOk:
      return "ok";
    case Result::kMalformed:
      return "malformed or misdirected Wrap token";
    case Result::kBadIntegrity:
      return "Wrap token failed its integrity check";
    case Result::kReplay:
      return "Wrap token is a replay";
    case Result::kOutOfOrder:
      return "Wrap token out of sequence";
    case Result::kExpired:
      return "the Kerberos context has expired";
  }
  return "Wrap token rejected";
}

CfxProtector::CfxProtector() : keys_(std::make_unique<Keys>()) {}

CfxProtector::~CfxProtector() = default;

std::unique_ptr<CfxProtector> CfxProtector::take_over(GssContext& context,
                                                      uint64_t tokens_unwrapped, std::string* why) {
  int32_t et = wrap_key_enctype(context.get());
  if (find_enctype(et) == nullptr) {
    *why = "enctype " + std::to_string(et) + " is left to the GSS-API library";
    return nullptr;
  }
  OM_uint32 minor = 0;
  void* raw = nullptr;
  // From here on the GSS context is gone (MIT deletes it and clears the handle).
  OM_uint32 major = gss_krb5_export_lucid_sec_context(&minor, context.out(), 1, &raw);
  if (GSS_ERROR(major) || raw == nullptr) {
    *why = "gss_krb5_export_lucid_sec_context: " + gss_status_text(major, minor);
    return nullptr;
  }
  std::unique_ptr<void, void (*)(void*)> lucid(raw, [](void* p) {
    auto* l = static_cast<gss_krb5_lucid_context_v1_t*>(p);
    auto wipe = [](gss_krb5_lucid_key_t& k) {
      if (k.data != nullptr) OPENSSL_cleanse(k.data, k.length);
    };
    wipe(l->cfx_kd.ctx_key);
    wipe(l->cfx_kd.acceptor_subkey);
    wipe(l->rfc1964_kd.ctx_key);
    OM_uint32 m = 0;
    gss_krb5_free_lucid_sec_context(&m, p);
  });
  auto* l = static_cast<gss_krb5_lucid_context_v1_t*>(raw);
  if (l->version != 1 || l->protocol != 1) {
    *why = "the exported context is not an RFC 4121 context";
    return nullptr;
  }
  auto bytes = [](const gss_krb5_lucid_key_t& k) {
    return std::span<const uint8_t>(static_cast<const uint8_t*>(k.data), k.length);
  };
  const bool has_sub = l->cfx_kd.have_acceptor_subkey != 0;
  return make(l->initiate != 0, static_cast<int32_t>(l->cfx_kd.ctx_key.type),
              bytes(l->cfx_kd.ctx_key),
              has_sub ? static_cast<int32_t>(l->cfx_kd.acceptor_subkey.type) : 0,
              has_sub ? bytes(l->cfx_kd.acceptor_subkey) : std::span<const uint8_t>(), l->send_seq,
              l->recv_seq + tokens_unwrapped, l->endtime, why);
}

std::unique_ptr<CfxProtector> CfxProtector::from_keys(const KeyMaterial& m, std::string* why) {
  return make(m.initiator, m.ctx_enctype, m.ctx_key, m.subkey_enctype, m.subkey, m.send_seq,
              m.recv_seq, m.endtime, why);
}

std::unique_ptr<CfxProtector> CfxProtector::make(bool initiator, int32_t ctx_type,
                                                 std::span<const uint8_t> ctx_key, int32_t sub_type,
                                                 std::span<const uint8_t> sub, uint64_t send_seq,
                                                 uint64_t recv_next, int64_t endtime,
                                                 std::string* why) {
  std::unique_ptr<CfxProtector> p(new CfxProtector());
  p->initiator_ = initiator;
  p->acceptor_subkey_ = !sub.empty();
  p->endtime_ = endtime;
  p->send_seq_ = send_seq;
  p->recv_next_ = recv_next;
  p->recv_window_ = ~uint64_t{0};  // everything before the next expected number counts as seen
  const uint32_t send_usage = initiator ? kUsageInitiatorSeal : kUsageAcceptorSeal;
  const uint32_t recv_usage = initiator ? kUsageAcceptorSeal : kUsageInitiatorSeal;
  // Both sides send under the acceptor subkey when there is one (RFC 4121 section 2).
  const int32_t send_type = p->acceptor_subkey_ ? sub_type : ctx_type;
  p->enctype_ = send_type;
  Keys& k = *p->keys_;
  if (!k.init_mac() ||
      !k.send.init(send_type, p->acceptor_subkey_ ? sub : ctx_key, send_usage, true)) {
    *why = "cannot set up OpenSSL for enctype " + std::to_string(send_type);
    return nullptr;
  }
  // The peer may use the context key even when an acceptor subkey exists (MIT picks the key by
  // the token's AcceptorSubkey flag); a context key of an enctype we lack just refuses those.
  k.recv[0].init(ctx_type, ctx_key, recv_usage, false);
  if (p->acceptor_subkey_ && !k.recv[1].init(sub_type, sub, recv_usage, false)) {
    *why = "cannot set up OpenSSL for enctype " + std::to_string(sub_type);
    return nullptr;
  }
  return p;
}

size_t CfxProtector::tokens_for(bool conf, size_t n, size_t max_plain) {
  static_assert(kBatch == AesCtsLanes::kMaxLanes);
  constexpr size_t kMinBatchedToken = size_t{16} << 10;
  size_t tokens = max_plain == 0 ? 1 : (n + max_plain - 1) / max_plain;
  if (conf) {
    tokens = std::max(tokens, std::min(kBatch, n / kMinBatchedToken));
    if (tokens > kBatch) tokens = (tokens + kBatch - 1) / kBatch * kBatch;
  }
  return std::max<size_t>(tokens, 1);
}

size_t CfxProtector::overhead(bool conf) const {
  return conf ? kHeader + kConfounder + kHeader + kMac : kHeader + kMac;
}

bool CfxProtector::expired() const { return static_cast<int64_t>(std::time(nullptr)) > endtime_; }

bool CfxProtector::wrap(bool conf, std::span<const uint8_t> plain, std::vector<uint8_t>* token,
                        std::string* why) {
  const size_t base = token->size();
  token->resize(base + token_size(conf, plain.size()));
  uint8_t* dest = token->data() + base;
  if (!wrap_into(conf, {&plain, 1}, {&dest, 1}, why)) {
    token->resize(base);
    return false;
  }
  return true;
}

bool CfxProtector::wrap_into(bool conf, std::span<const std::span<const uint8_t>> plains,
                             std::span<uint8_t* const> dests, std::string* why) {
  if (expired()) {
    *why = result_text(Result::kExpired);
    return false;
  }
  if (dests.size() != plains.size()) {
    *why = "wrap_into: one destination per message";
    return false;
  }
  const DirectionKeys& dk = keys_->send;
  uint8_t hdr[kHeader] = {0x05, 0x04, 0, 0xFF};
  hdr[2] = static_cast<uint8_t>((initiator_ ? 0 : kFlagSentByAcceptor) | (conf ? kFlagSealed : 0) |
                                (acceptor_subkey_ ? kFlagAcceptorSubkey : 0));
  // EC: no filler under CTS; for integrity only, the checksum length. RRC: 0 (we never rotate).
  put_be16(hdr + 4, conf ? 0 : kMac);
  bool ok = true;
  // Sealed: header | E(Ke, confounder | plain | header) | HMAC(Ki, confounder | plain | header).
  // The checksums are over the plaintext, so every token is filled and MACed first, then the
  // group's encryption runs in one pass.
  std::array<std::span<uint8_t>, kBatch> group;
  size_t grouped = 0;
  auto encrypt_group = [&] {
    if (dk.lanes != nullptr) {
      ok = ok && dk.lanes->encrypt(std::span(group).first(grouped));
    } else {
      for (size_t j = 0; j < grouped; ++j)
        ok = ok && dk.crypt(group[j].data(), group[j].size(), group[j].data());
    }
    grouped = 0;
  };
  for (size_t i = 0; i < plains.size() && ok; ++i) {
    const std::span<const uint8_t> plain = plains[i];
    uint8_t* t = dests[i];
    put_be64(hdr + 8, send_seq_ + i);
    std::memcpy(t, hdr, kHeader);
    if (conf) {
      const size_t p_len = kConfounder + plain.size() + kHeader;
      uint8_t* p = t + kHeader;
      if (!plain.empty()) std::memcpy(p + kConfounder, plain.data(), plain.size());
      std::memcpy(p + kConfounder + plain.size(), hdr, kHeader);
      ok = RAND_bytes(p, kConfounder) == 1 && keys_->hmac96(dk.ki, {p, p_len}, {}, p + p_len);
      group[grouped++] = {p, p_len};
      if (grouped == group.size() || i + 1 == plains.size()) encrypt_group();
    } else {
      // header | plain | HMAC(Kc, plain | header with EC = RRC = 0)
      if (!plain.empty()) std::memcpy(t + kHeader, plain.data(), plain.size());
      uint8_t zeroed[kHeader];
      std::memcpy(zeroed, hdr, kHeader);
      put_be16(zeroed + 4, 0);
      ok = keys_->hmac96(dk.kc, plain, zeroed, t + kHeader + plain.size());
    }
  }
  if (!ok) {
    *why = "OpenSSL failed to make a Wrap token";
    return false;
  }
  send_seq_ += plains.size();
  return true;
}

bool CfxProtector::append_stream(bool conf, std::span<const uint8_t> data, size_t max_plain,
                                 const FrameHeader& frame_header, std::vector<uint8_t>* out,
                                 std::string* why) {
  const size_t tokens = tokens_for(conf, data.size(), max_plain);
  const size_t piece = (data.size() + tokens - 1) / tokens;
  const size_t old = out->size();
  while (!data.empty()) {
    // Frame headers and room for a batch first (*out may move while it grows), then the
    // tokens straight into it.
    std::array<std::span<const uint8_t>, kBatch> batch;
    std::array<size_t, kBatch> offsets;
    size_t n = 0;
    for (; n < kBatch && !data.empty(); ++n) {
      batch[n] = data.first(std::min(piece, data.size()));
      data = data.subspan(batch[n].size());
      const size_t len = token_size(conf, batch[n].size());
      frame_header(len, out);
      offsets[n] = out->size();
      out->resize(out->size() + len);
    }
    std::array<uint8_t*, kBatch> dests;
    for (size_t i = 0; i < n; ++i) dests[i] = out->data() + offsets[i];
    if (!wrap_into(conf, std::span(batch).first(n), std::span(dests).first(n), why)) {
      out->resize(old);
      return false;
    }
  }
  return true;
}

CfxProtector::Result CfxProtector::check_sequence(uint64_t seq, Order order) const {
  if (order == Order::kStream) {
    if (seq == recv_next_) return Result::kOk;
    return seq < recv_next_ ? Result::kReplay : Result::kOutOfOrder;
  }
  if (seq >= recv_next_) return Result::kOk;
  uint64_t back = recv_next_ - 1 - seq;
  if (back >= 64) return Result::kReplay;  // too old to tell: refuse, as MIT does
  return (recv_window_ >> back) & 1 ? Result::kReplay : Result::kOk;
}

void CfxProtector::record_sequence(uint64_t seq) {
  if (seq >= recv_next_) {
    uint64_t shift = seq - recv_next_ + 1;
    recv_window_ = shift >= 64 ? 0 : recv_window_ << shift;
    recv_window_ |= 1;
    recv_next_ = seq + 1;
  } else {
    recv_window_ |= uint64_t{1} << (recv_next_ - 1 - seq);
  }
}

CfxProtector::Result CfxProtector::unwrap(std::span<const uint8_t> token, Order order,
                                          std::vector<uint8_t>* plain, bool* conf) {
  if (expired()) return Result::kExpired;
  if (token.size() < kHeader) return Result::kMalformed;
  const uint8_t* h = token.data();
  if (h[0] != 0x05 || h[1] != 0x04 || h[3] != 0xFF) return Result::kMalformed;
  const uint8_t flags = h[2];  // unknown flag bits are ignored (RFC 4121 section 4.2.2)
  // A token must come from the other side: one of ours reflected back is refused.
  if (((flags & kFlagSentByAcceptor) != 0) == !initiator_) return Result::kMalformed;
  const bool sealed = (flags & kFlagSealed) != 0;
  const bool under_subkey = (flags & kFlagAcceptorSubkey) != 0;
  if (under_subkey && !acceptor_subkey_) return Result::kMalformed;
  const DirectionKeys& dk = keys_->recv[under_subkey ? 1 : 0];
  if (!dk.usable()) return Result::kMalformed;
  const uint16_t ec = get_be16(h + 4);
  const uint16_t rrc = get_be16(h + 6);
  const uint64_t seq = get_be64(h + 8);
  if (Result r = check_sequence(seq, order); r != Result::kOk) return r;

  std::span<const uint8_t> body = token.subspan(kHeader);
  if (rrc != 0 && !body.empty()) {
    // The sender rotated the body right by RRC octets (RFC 4121 section 4.2.5): undo it.
    size_t r = rrc % body.size();
    rotated_.resize(body.size());
    std::memcpy(rotated_.data(), body.data() + r, body.size() - r);
    std::memcpy(rotated_.data() + body.size() - r, body.data(), r);
    body = rotated_;
  }
  std::span<const uint8_t> data;
  uint8_t mac[kMac];
  if (sealed) {
    if (body.size() < kConfounder + kHeader + kMac) return Result::kMalformed;
    const size_t c_len = body.size() - kMac;
    scratch_.resize(c_len);
    if (!dk.crypt(body.data(), c_len, scratch_.data()) ||
        !keys_->hmac96(dk.ki, scratch_, {}, mac) ||
        CRYPTO_memcmp(mac, body.data() + c_len, kMac) != 0)
      return Result::kBadIntegrity;
    if (c_len < kConfounder + size_t{ec} + kHeader) return Result::kMalformed;
    // The encrypted copy of the header must match the clear one, RRC aside.
    const uint8_t* copy = scratch_.data() + c_len - kHeader;
    if (std::memcmp(copy, h, 6) != 0 || std::memcmp(copy + 8, h + 8, 8) != 0)
      return Result::kBadIntegrity;
    data =
        std::span<const uint8_t>(scratch_).subspan(kConfounder, c_len - kConfounder - ec - kHeader);
  } else {
    if (ec != kMac || body.size() < kMac) return Result::kMalformed;
    data = body.first(body.size() - kMac);
    uint8_t zeroed[kHeader];
    std::memcpy(zeroed, h, kHeader);
    put_be16(zeroed + 4, 0);
    put_be16(zeroed + 6, 0);
    if (!keys_->hmac96(dk.kc, data, zeroed, mac) ||
        CRYPTO_memcmp(mac, body.data() + data.size(), kMac) != 0)
      return Result::kBadIntegrity;
  }
  record_sequence(seq);
  plain->insert(plain->end(), data.begin(), data.end());
  *conf = sealed;
  return Result::kOk;
}

}  // namespace socksgate::crypto
