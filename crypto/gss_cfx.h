#pragma once
// CfxProtector: RFC 4121 ("CFX") Wrap tokens for an established Kerberos GSS-API context,
// computed with OpenSSL instead of MIT's libk5crypto.
//
// Why: Debian builds MIT krb5 with its built-in crypto (no AES-NI, no SHA-NI), which caps
// gss_wrap/gss_unwrap with confidentiality near 150 MB/s per core; OpenSSL's AES-CBC-CTS and
// HMAC-SHA1 run an order of magnitude faster on the same CPU. The token format is the standard
// one, so the peer can be any RFC 4121 implementation (MIT, Heimdal, Windows SSPI).
//
// Scope: the aes128-cts-hmac-sha1-96 and aes256-cts-hmac-sha1-96 enctypes (RFC 3962), which are
// what MIT and Active Directory negotiate by default. take_over() answers nullptr for anything
// else (RFC 1964 DES/RC4 contexts, the RFC 8009 aes-sha2 enctypes, Camellia) and leaves the
// context untouched, so the caller keeps using gss_wrap/gss_unwrap.
//
// Once take_over() succeeded the GSS context is gone (MIT deletes it on export): every Wrap
// token of the context, in both directions, must go through this object, which continues the
// sequence numbers where MIT left them.
//
// Sequence numbers (RFC 4121 section 4.2.3): stream tokens must arrive in exactly the order
// they were sent (TCP never reorders; a gap or a replay is an attack); datagrams may be lost or
// reordered within a window of 64 but never replayed. Both share one receive sequence space,
// as they do in MIT.
//
// Not thread-safe: one object per session, used on the session's executor.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "crypto/gss.h"

namespace socksgate::crypto {

class CfxProtector {
 public:
  enum class Order { kStream, kDatagram };
  enum class Result {
    kOk,
    kMalformed,     // not a Wrap token of this context (token ID, flags, lengths)
    kBadIntegrity,  // checksum or decryption check failed, or the embedded header differs
    kReplay,        // sequence number already seen (or too old to tell)
    kOutOfOrder,    // stream only: a gap or reordering
    kExpired,       // the context's lifetime (the Kerberos ticket's end time) has passed
  };
  static const char* result_text(Result r);

  // Exports the context's keys and sequence state (gss_krb5_export_lucid_sec_context) and
  // derives the per-direction keys. `tokens_unwrapped`: how many Wrap tokens MIT has already
  // verified on this context (MIT exports the receive sequence number the context started
  // with, not the next one). nullptr with *why when the context is not a CFX context with a
  // supported enctype; *context is then still usable (nothing was exported).
  static std::unique_ptr<CfxProtector> take_over(GssContext& context, uint64_t tokens_unwrapped,
                                                 std::string* why);

  // The same from raw keys (tests, fuzzing, and peers that establish the context elsewhere).
  // An empty `subkey` means the context has no acceptor subkey.
  struct KeyMaterial {
    bool initiator = false;
    int32_t ctx_enctype = 0;
    std::span<const uint8_t> ctx_key;
    int32_t subkey_enctype = 0;
    std::span<const uint8_t> subkey;
    uint64_t send_seq = 0;
    uint64_t recv_seq = 0;  // the next sequence number expected from the peer
    int64_t endtime = 0;    // seconds since the epoch
  };
  static std::unique_ptr<CfxProtector> from_keys(const KeyMaterial& m, std::string* why);

  ~CfxProtector();
  CfxProtector(const CfxProtector&) = delete;
  CfxProtector& operator=(const CfxProtector&) = delete;

  // Bytes a Wrap token adds to its plaintext.
  size_t overhead(bool conf) const;
  // The kerberos enctype number of the key in use (17 or 18).
  int32_t enctype() const { return enctype_; }

  // Tokens wrap_into() encrypts side by side.
  static constexpr size_t kBatch = 4;
  // How many tokens of equal size to cut `n` plaintext bytes into, each at most `max_plain`:
  // the fewest that fit, but with confidentiality at least kBatch (of 16 KiB or more) where
  // `n` allows, and then a multiple of kBatch, so that every batch fills the AES lanes.
  static size_t tokens_for(bool conf, size_t n, size_t max_plain);

  // Bytes of the Wrap token of `n` plaintext bytes.
  size_t token_size(bool conf, size_t n) const { return n + overhead(conf); }

  // Appends a Wrap token for `plain` to *token (conf: encrypted and integrity-protected;
  // otherwise integrity only). Returns false when the context has expired (*why says so) or
  // OpenSSL fails.
  bool wrap(bool conf, std::span<const uint8_t> plain, std::vector<uint8_t>* token,
            std::string* why);
  // The Wrap tokens of several messages, in sequence-number order: plains[i]'s token goes to
  // dests[i], which has room for token_size(conf, plains[i].size()) bytes. With
  // confidentiality, groups of up to four tokens are encrypted side by side (AesCtsLanes), so
  // a batch of four costs about what one token costs in AES; pass four or more where the data
  // allows. All or nothing: on failure the sequence number has not moved.
  bool wrap_into(bool conf, std::span<const std::span<const uint8_t>> plains,
                 std::span<uint8_t* const> dests, std::string* why);

  // Writes the header of a frame whose token (token_len bytes) follows, for the caller's framing.
  using FrameHeader = std::function<void(size_t token_len, std::vector<uint8_t>* out)>;
  // Stream data: cuts `data` into the tokens_for() equal pieces of at most `max_plain` bytes and
  // appends, for each, frame_header() and then its Wrap token straight into *out, batches
  // encrypted side by side (wrap_into). On failure *out is as it was; the sequence number may
  // have moved, so the stream must end.
  bool append_stream(bool conf, std::span<const uint8_t> data, size_t max_plain,
                     const FrameHeader& frame_header, std::vector<uint8_t>* out, std::string* why);
  // Verifies one Wrap token and appends its plaintext to *plain. *conf tells whether it was
  // encrypted. On any failure nothing is appended and the sequence state is unchanged.
  Result unwrap(std::span<const uint8_t> token, Order order, std::vector<uint8_t>* plain,
                bool* conf);

  // For tests: the next sequence number each way.
  uint64_t send_seq() const { return send_seq_; }
  uint64_t recv_next() const { return recv_next_; }

 private:
  struct Keys;
  CfxProtector();
  static std::unique_ptr<CfxProtector> make(bool initiator, int32_t ctx_type,
                                            std::span<const uint8_t> ctx_key, int32_t sub_type,
                                            std::span<const uint8_t> sub, uint64_t send_seq,
                                            uint64_t recv_next, int64_t endtime, std::string* why);
  bool expired() const;
  Result check_sequence(uint64_t seq, Order order) const;
  void record_sequence(uint64_t seq);

  int64_t endtime_ = 0;  // seconds since the epoch
  int32_t enctype_ = 0;
  bool initiator_ = false;
  bool acceptor_subkey_ = false;
  std::unique_ptr<Keys> keys_;
  uint64_t send_seq_ = 0;
  uint64_t recv_next_ = 0;        // one past the highest sequence number accepted
  uint64_t recv_window_ = 0;      // bit i: recv_next_ - 1 - i was accepted
  std::vector<uint8_t> scratch_;  // decrypted body
  std::vector<uint8_t> rotated_;  // a token body with a non-zero RRC, put back in order
};

}  // namespace socksgate::crypto
