#include "crypto/gss_channel.h"

#include <algorithm>
#include <asio/error.hpp>
#include <cstring>
#include <string>

namespace socksgate::crypto {
namespace {

class GssCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "gss"; }
  std::string message(int ev) const override {
    switch (static_cast<GssErrc>(ev)) {
      case GssErrc::kUnwrapFailed:
        return "GSS-API token failed verification";
      case GssErrc::kProtectionMismatch:
        return "GSS-API token protection differs from the agreed level";
      case GssErrc::kWrapFailed:
        return "GSS-API wrap failed";
      case GssErrc::kUnexpectedMessage:
        return "unexpected GSS-API message";
      case GssErrc::kFramingError:
        return "malformed GSS-API framing";
    }
    return "GSS-API error";
  }
};

constexpr size_t kReadChunk = 16384;

}  // namespace

const std::error_category& gss_category() {
  static const GssCategory c;
  return c;
}

GssChannel::GssChannel(Channel& inner, std::shared_ptr<GssContext> context, bool confidentiality,
                       std::shared_ptr<const TokenFraming> framing, uint64_t tokens_unwrapped,
                       bool use_openssl)
    : inner_(inner),
      context_(std::move(context)),
      conf_(confidentiality),
      framing_(std::move(framing)) {
  if (use_openssl) {
    std::string why;  // why not: the enctype stays with MIT, which is correct, only slower
    cfx_ = CfxProtector::take_over(*context_, tokens_unwrapped, &why);
    if (cfx_ == nullptr && context_->get() == GSS_C_NO_CONTEXT) {
      // The export consumed the context and then failed: nothing can protect this session.
      fail(GssErrc::kWrapFailed, why);
    }
  }
  if (cfx_ != nullptr) {
    max_chunk_ = framing_->max_token() - cfx_->overhead(conf_);
    return;
  }
  OM_uint32 minor = 0, max_in = 0;
  OM_uint32 major = gss_wrap_size_limit(&minor, context_->get(), conf_ ? 1 : 0, GSS_C_QOP_DEFAULT,
                                        static_cast<OM_uint32>(framing_->max_token()), &max_in);
  // Without an answer, a conservative size that fits any krb5 enctype's overhead.
  max_chunk_ = GSS_ERROR(major) || max_in == 0 ? framing_->max_token() - 1024 : max_in;
}

GssChannel::~GssChannel() = default;

int32_t GssChannel::openssl_enctype() const { return cfx_ != nullptr ? cfx_->enctype() : 0; }

void GssChannel::fail(GssErrc e, std::string detail) {
  if (!failure_) {
    failure_ = e;
    failure_detail_ = std::move(detail);
  }
}

bool GssChannel::append_wrapped(std::span<const uint8_t> plain, std::vector<uint8_t>* out,
                                std::string* why) {
  const size_t old = out->size();
  if (cfx_ != nullptr) {
    // Header first, then the token straight into *out: no intermediate copy.
    framing_->append_frame_header(cfx_->token_size(conf_, plain.size()), out);
    if (!cfx_->wrap(conf_, plain, out, why)) {
      out->resize(old);
      return false;
    }
    return true;
  }
  OM_uint32 minor = 0;
  int conf_state = 0;
  gss_buffer_desc in = gss_view(plain);
  GssBuffer token;
  OM_uint32 major = gss_wrap(&minor, context_->get(), conf_ ? 1 : 0, GSS_C_QOP_DEFAULT, &in,
                             &conf_state, token.get());
  if (GSS_ERROR(major)) {
    *why = gss_status_text(major, minor);
    return false;
  }
  if ((conf_state != 0) != conf_ || token.bytes().size() > framing_->max_token()) {
    *why = "gss_wrap did not give the agreed protection within the bound";
    return false;
  }
  framing_->append_frame(token.bytes(), out);
  return true;
}

std::error_code GssChannel::verify(std::span<const uint8_t> token, bool datagram,
                                   std::vector<uint8_t>* plain, std::string* why) {
  const size_t old = plain->size();
  bool conf = false;
  if (cfx_ != nullptr) {
    auto order = datagram ? CfxProtector::Order::kDatagram : CfxProtector::Order::kStream;
    CfxProtector::Result r = cfx_->unwrap(token, order, plain, &conf);
    if (r != CfxProtector::Result::kOk) {
      *why = CfxProtector::result_text(r);
      return GssErrc::kUnwrapFailed;
    }
  } else {
    OM_uint32 minor = 0;
    int conf_state = 0;
    gss_qop_t qop = 0;
    gss_buffer_desc in = gss_view(token);
    GssBuffer out;
    OM_uint32 major = gss_unwrap(&minor, context_->get(), &in, out.get(), &conf_state, &qop);
    // Any supplementary status (duplicate, old, unseq, gap) is an error for a stream: RFC 1961
    // sessions ask for replay and sequence detection, and TCP never reorders. Datagrams may be
    // lost or reordered, never duplicated.
    const OM_uint32 tolerated = datagram ? GSS_S_GAP_TOKEN | GSS_S_UNSEQ_TOKEN : 0;
    if (GSS_ERROR(major) || (GSS_SUPPLEMENTARY_INFO(major) & ~tolerated) != 0) {
      *why = gss_status_text(major, minor);
      return GssErrc::kUnwrapFailed;
    }
    conf = conf_state != 0;
    plain->insert(plain->end(), out.bytes().begin(), out.bytes().end());
  }
  if (conf != conf_) {
    // A token of the wrong level is taken back out before anyone could read it.
    plain->resize(old);
    *why = conf_ ? "an unencrypted token after agreeing on confidentiality"
                 : "an encrypted token after agreeing on integrity";
    return GssErrc::kProtectionMismatch;
  }
  return {};
}

bool GssChannel::unwrap(std::span<const uint8_t> token, std::vector<uint8_t>* plain) {
  if (failure_) return false;
  std::string why;
  if (std::error_code ec = verify(token, /*datagram=*/false, plain, &why)) {
    fail(static_cast<GssErrc>(ec.value()), std::move(why));
    return false;
  }
  return true;
}

bool GssChannel::open_datagram(std::span<const uint8_t> datagram, std::vector<uint8_t>* plain) {
  std::span<const uint8_t> token;
  size_t consumed = 0;
  if (framing_->parse_frame(datagram, &token, &consumed) || consumed != datagram.size()) {
    return false;
  }
  plain->clear();
  std::string why;
  return !verify(token, /*datagram=*/true, plain, &why);
}

bool GssChannel::seal_datagram(std::span<const uint8_t> plain, std::vector<uint8_t>* datagram) {
  if (plain.empty() || plain.size() > max_chunk_) return false;
  datagram->clear();
  std::string why;
  return append_wrapped(plain, datagram, &why);
}

asio::awaitable<std::error_code> GssChannel::write_all(std::span<const uint8_t> data) {
  if (failure_) co_return failure_;
  const CfxProtector::FrameHeader frame_header = [this](size_t len, std::vector<uint8_t>* out) {
    framing_->append_frame_header(len, out);
  };
  while (!data.empty()) {
    // Up to 256 KiB per write to the socket, to keep syscalls few, in tokens of at most
    // max_chunk_ bytes (on OpenSSL cut as CfxProtector::tokens_for() says).
    std::span<const uint8_t> chunk = data.first(std::min(data.size(), kWriteBatch));
    data = data.subspan(chunk.size());
    out_.clear();
    std::string why;
    bool ok = true;
    if (cfx_ != nullptr) {
      ok = cfx_->append_stream(conf_, chunk, max_chunk_, frame_header, &out_, &why);
    } else {
      for (size_t n = 0; ok && !chunk.empty(); chunk = chunk.subspan(n)) {
        n = std::min(chunk.size(), max_chunk_);
        ok = append_wrapped(chunk.first(n), &out_, &why);
      }
    }
    if (!ok) {
      fail(GssErrc::kWrapFailed, std::move(why));
      co_return failure_;
    }
    if (std::error_code ec = co_await inner_.write_all(out_)) co_return ec;
  }
  co_return std::error_code{};
}

asio::awaitable<std::pair<std::error_code, size_t>> GssChannel::read_some_raw(
    std::span<uint8_t> buf) {
  for (;;) {
    if (plain_off_ < plain_.size()) {
      size_t n = std::min(buf.size(), plain_.size() - plain_off_);
      std::memcpy(buf.data(), plain_.data() + plain_off_, n);
      plain_off_ += n;
      if (plain_off_ == plain_.size()) {
        plain_.clear();
        plain_off_ = 0;
      }
      co_return std::pair{std::error_code{}, n};
    }
    if (failure_) co_return std::pair{failure_, size_t{0}};
    // Unwrap every whole frame already here; stop at the first failure.
    size_t used = 0;
    for (;;) {
      std::span<const uint8_t> token;
      size_t consumed = 0;
      std::error_code ec = framing_->parse_frame(
          std::span<const uint8_t>(raw_.data() + used, raw_.size() - used), &token, &consumed);
      if (ec == ParseErrc::kNeedMore) break;
      if (ec) {
        fail(ec == GssErrc::kUnexpectedMessage ? GssErrc::kUnexpectedMessage
                                               : GssErrc::kFramingError,
             ec.message());
        break;
      }
      used += consumed;
      if (!unwrap(token, &plain_)) break;
    }
    raw_.erase(raw_.begin(), raw_.begin() + static_cast<ptrdiff_t>(used));
    if (failure_) {
      // Whatever verified before the bad token is still delivered: it was genuine and earlier
      // in the stream. Nothing after it ever is.
      if (plain_off_ < plain_.size()) continue;
      co_return std::pair{failure_, size_t{0}};
    }
    if (plain_off_ < plain_.size()) continue;
    // Need more bytes: a frame is bounded, so the raw buffer is too.
    size_t old = raw_.size();
    size_t room = std::min(kReadChunk, framing_->max_frame() + kReadChunk - old);
    raw_.resize(old + room);
    auto [ec, n] = co_await inner_.read_some(std::span<uint8_t>(raw_.data() + old, room));
    raw_.resize(old + n);
    if (!ec && n == 0) ec = asio::error::eof;
    if (ec == asio::error::eof && !raw_.empty()) {
      fail(GssErrc::kFramingError, "the stream ended inside a token");
      co_return std::pair{failure_, size_t{0}};
    }
    if (ec) co_return std::pair{ec, size_t{0}};
  }
}

}  // namespace socksgate::crypto
