#pragma once
// GssChannel: a Channel whose every byte is GSS-API per-message protected, the encapsulation
// RFC 1961 section 5 prescribes once a protection level is agreed.
//
// - write_all() cuts the data into equal chunks of at most the gss_wrap_size_limit answer, so
//   that each wrapped token stays within the framing's token bound (65535), wraps each with
//   conf_req = the agreed level (integrity: FALSE, confidentiality: TRUE) and frames it. On
//   OpenSSL, encrypted chunks come at least four at a time where the data allows
//   (CfxProtector::tokens_for), since four tokens encrypt in the time of one.
// - reads take whole frames from the inner channel, gss_unwrap each and hand out the plain
//   bytes. A token that fails to unwrap (MIC or decryption failure, replay, reordering) or whose
//   conf_state differs from the agreed level ends the channel: the read returns an error, no
//   byte of that token or of anything after it is handed out, and the channel stays failed.
// - plain_socket() is null: the relay must copy, never splice.
//
// Per-message protection is RFC 4121 computed with OpenSSL (crypto::CfxProtector) whenever the
// context's enctype allows it, which is far faster than MIT's built-in crypto; other contexts
// keep gss_wrap/gss_unwrap. Either way the tokens on the wire are the same standard ones.
//
// The framing is injected (auth/gssapi provides RFC 1961's `01 03 LEN TOKEN`) so that crypto/
// does not depend on auth/. One GssChannel per session; all calls on the session's executor.
// The inner channel must outlive this one.

#include <memory>
#include <vector>

#include "crypto/channel.h"
#include "crypto/gss.h"
#include "crypto/gss_cfx.h"

namespace socksgate::crypto {

enum class GssErrc {
  kUnwrapFailed = 1,    // gss_unwrap failed (bad MIC, decryption failure, replay, gap)
  kProtectionMismatch,  // a token's conf_state is not the agreed level
  kWrapFailed,          // gss_wrap failed (context expired, ...)
  kUnexpectedMessage,   // a frame that is not encapsulated data
  kFramingError,        // the framing is malformed
};
const std::error_category& gss_category();
inline std::error_code make_error_code(GssErrc e) { return {static_cast<int>(e), gss_category()}; }

}  // namespace socksgate::crypto

template <>
struct std::is_error_code_enum<socksgate::crypto::GssErrc> : std::true_type {};

namespace socksgate::crypto {

// How tokens are framed on the wire.
class TokenFraming {
 public:
  virtual ~TokenFraming() = default;
  virtual size_t max_token() const = 0;
  virtual size_t max_frame() const = 0;
  // Appends one frame carrying `token` to *out.
  virtual void append_frame(std::span<const uint8_t> token, std::vector<uint8_t>* out) const = 0;
  // Appends only the header of a frame whose token (token_len bytes) the caller appends next.
  virtual void append_frame_header(size_t token_len, std::vector<uint8_t>* out) const = 0;
  // ParseErrc::kNeedMore until a whole frame is in `in`; then *token (pointing into `in`) and
  // *consumed. Any other error: GssErrc::kUnexpectedMessage (a well-formed frame of another
  // kind, e.g. an abort) or kFramingError.
  virtual std::error_code parse_frame(std::span<const uint8_t> in, std::span<const uint8_t>* token,
                                      size_t* consumed) const = 0;
};

class GssChannel final : public Channel {
 public:
  // `confidentiality`: the agreed level (true = every token encrypted, false = integrity only).
  // `tokens_unwrapped`: how many Wrap tokens were already gss_unwrapped on the context (the
  // RFC 1961 protection-level message: 1, or 0 in NEC mode). `use_openssl` = false keeps MIT's
  // gss_wrap/gss_unwrap for every context (tests compare both).
  GssChannel(Channel& inner, std::shared_ptr<GssContext> context, bool confidentiality,
             std::shared_ptr<const TokenFraming> framing, uint64_t tokens_unwrapped,
             bool use_openssl = true);
  ~GssChannel() override;

  asio::awaitable<std::error_code> write_all(std::span<const uint8_t> data) override;
  std::error_code shutdown_send() override { return inner_.shutdown_send(); }
  void close() override { inner_.close(); }
  void reset() override { inner_.reset(); }
  asio::ip::tcp::socket* plain_socket() override { return nullptr; }
  asio::ip::tcp::socket& lowest_layer() override { return inner_.lowest_layer(); }
  // True when a read returns without new bytes from the socket: unwrapped bytes not yet handed
  // out, frames waiting, bytes the inner channel holds, or a failure to report.
  bool has_buffered() const override {
    return Channel::has_buffered() || plain_off_ < plain_.size() || !raw_.empty() ||
           static_cast<bool>(failure_) || inner_.has_buffered();
  }

  // The protection failure that ended the channel, with the GSS status text (empty if none).
  std::error_code failure() const { return failure_; }
  const std::string& failure_detail() const { return failure_detail_; }
  size_t max_chunk() const { return max_chunk_; }
  // The enctype whose tokens OpenSSL computes, or 0 when MIT's gss_wrap/gss_unwrap do.
  int32_t openssl_enctype() const;

  // Unwraps one stream message without I/O, appending its plaintext to *plain. Returns false
  // and records the failure (the channel is then failed) when the token does not verify, is
  // out of sequence or has the wrong conf_state.
  bool unwrap(std::span<const uint8_t> token, std::vector<uint8_t>* plain);

  // Datagrams (UDP ASSOCIATE): one framed token each. A datagram that is not exactly one
  // frame, does not verify, is a replay or has the wrong conf_state yields false; the channel
  // itself is not failed (datagrams may be forged, lost or reordered: gaps and reordering are
  // accepted, duplicates are not).
  bool open_datagram(std::span<const uint8_t> datagram, std::vector<uint8_t>* plain);
  bool seal_datagram(std::span<const uint8_t> plain, std::vector<uint8_t>* datagram);

 protected:
  asio::awaitable<std::pair<std::error_code, size_t>> read_some_raw(
      std::span<uint8_t> buf) override;

 private:
  void fail(GssErrc e, std::string detail);
  // Plaintext bytes per write to the inner channel.
  static constexpr size_t kWriteBatch = size_t{256} << 10;

  // Appends one frame carrying the Wrap token of `plain` (at the agreed level) to *out: every
  // datagram, and the stream tokens when MIT makes them (CfxProtector::append_stream() makes
  // OpenSSL's in batches). False with *why (and *out as it was).
  bool append_wrapped(std::span<const uint8_t> plain, std::vector<uint8_t>* out, std::string* why);
  // Verifies one token and appends its plaintext to *plain (nothing on failure, *why says
  // what). Datagrams tolerate gaps and reordering, streams do not; neither tolerates replays.
  std::error_code verify(std::span<const uint8_t> token, bool datagram, std::vector<uint8_t>* plain,
                         std::string* why);

  Channel& inner_;
  std::shared_ptr<GssContext> context_;
  bool conf_;
  std::shared_ptr<const TokenFraming> framing_;
  std::unique_ptr<CfxProtector> cfx_;  // null: MIT does the per-message work
  size_t max_chunk_ = 0;
  std::vector<uint8_t> raw_;    // frames read but not yet unwrapped
  std::vector<uint8_t> plain_;  // unwrapped bytes not yet handed out
  size_t plain_off_ = 0;
  std::vector<uint8_t> out_;  // reused for writes
  std::error_code failure_;
  std::string failure_detail_;
};

}  // namespace socksgate::crypto
