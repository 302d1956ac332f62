#include "crypto/audit_chain.h"

#include <openssl/evp.h>

#include <cstring>

namespace socksgate::crypto {

std::string to_hex(std::span<const uint8_t> bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(bytes.size() * 2, '0');
  for (size_t i = 0; i < bytes.size(); ++i) {
    out[2 * i] = kHex[bytes[i] >> 4];
    out[2 * i + 1] = kHex[bytes[i] & 15];
  }
  return out;
}

Sha256Digest sha256(std::string_view data) {
  Sha256Digest d{};
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), d.data(), &len, EVP_sha256(), nullptr);
  return d;
}

namespace {
std::span<const uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}
}  // namespace

Sha256Digest audit_epoch_key(std::span<const uint8_t> master, uint64_t epoch) {
  std::string label = "socksgate audit epoch " + std::to_string(epoch);
  return hmac_sha256(master, bytes_of(label));
}

std::string audit_record_hash(std::string_view hashed, const Sha256Digest* epoch_key) {
  if (epoch_key == nullptr) return to_hex(sha256(hashed));
  return to_hex(hmac_sha256(*epoch_key, bytes_of(hashed)));
}

std::optional<AuditLineParts> split_audit_line(std::string_view line) {
  constexpr size_t kTail = kAuditHashMarker.size() + 64 + 2;  // ,"hash":" + hex + "}
  if (line.size() < kTail + 1) return std::nullopt;
  size_t at = line.size() - kTail;
  if (line.substr(at, kAuditHashMarker.size()) != kAuditHashMarker) return std::nullopt;
  std::string_view hash = line.substr(at + kAuditHashMarker.size(), 64);
  for (char c : hash) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return std::nullopt;
  }
  if (line.substr(line.size() - 2) != "\"}") return std::nullopt;
  return AuditLineParts{line.substr(0, at), hash};
}

AuditChain::AuditChain(std::vector<uint8_t> key, uint64_t epoch_records,
                       std::chrono::seconds epoch_seconds)
    : key_(std::move(key)),
      epoch_records_(epoch_records == 0 ? 1 : epoch_records),
      epoch_seconds_(epoch_seconds) {}

AuditChain::~AuditChain() {
  if (!key_.empty()) secure_zero(key_.data(), key_.size());
  secure_zero(cached_key_.data(), cached_key_.size());
}

void AuditChain::resume(uint64_t seq, std::string last_hash, uint64_t last_epoch) {
  state_.seq = seq;
  state_.last_hash = std::move(last_hash);
  state_.epoch = keyed() ? last_epoch + 1 : 0;
  state_.in_epoch = 0;
  state_.epoch_start = std::chrono::steady_clock::now();
}

const Sha256Digest& AuditChain::epoch_key() {
  if (cached_epoch_ != state_.epoch) {
    cached_key_ = audit_epoch_key(key_, state_.epoch);
    cached_epoch_ = state_.epoch;
  }
  return cached_key_;
}

void AuditChain::append(std::string_view body, std::string* out) {
  if (keyed()) {
    auto now = std::chrono::steady_clock::now();
    if (state_.in_epoch >= epoch_records_ || now - state_.epoch_start >= epoch_seconds_) {
      ++state_.epoch;
      state_.in_epoch = 0;
      state_.epoch_start = now;
    }
  }
  size_t start = out->size();
  out->append("{\"seq\":");
  out->append(std::to_string(state_.seq + 1));
  if (keyed()) {
    out->append(",\"epoch\":");
    out->append(std::to_string(state_.epoch));
  }
  out->append(",\"prev\":\"");
  out->append(state_.last_hash);
  out->append("\",");
  out->append(body);
  std::string h =
      audit_record_hash(std::string_view(*out).substr(start), keyed() ? &epoch_key() : nullptr);
  out->append(kAuditHashMarker);
  out->append(h);
  out->append("\"}\n");
  ++state_.seq;
  ++state_.in_epoch;
  state_.last_hash = std::move(h);
}

}  // namespace socksgate::crypto
