// TLS pieces that need no handshake: ticket-key rotation, certificate identity mapping (with
// certificates built in memory), context checks (mismatched key, missing files).
#include "crypto/tls.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

namespace socksgate::crypto {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

TEST(TicketKeyRing, RotatesAndRetiresKeys) {
  TicketKeyRing ring(100s);
  const auto t0 = Clock::now();
  auto k1 = ring.current(t0);
  EXPECT_EQ(ring.current(t0 + 99s).name, k1.name);  // same period, same key
  bool renew = true;
  ASSERT_TRUE(ring.find(k1.name.data(), &renew, t0 + 10s));
  EXPECT_FALSE(renew);
  auto k2 = ring.current(t0 + 100s);  // rotated
  EXPECT_NE(k2.name, k1.name);
  ASSERT_TRUE(ring.find(k1.name.data(), &renew, t0 + 150s));
  EXPECT_TRUE(renew);  // an older key still decrypts, but asks for a fresh ticket
  EXPECT_FALSE(ring.find(k1.name.data(), &renew, t0 + 300s));  // three periods: retired
  std::array<uint8_t, 16> unknown{};
  EXPECT_FALSE(ring.find(unknown.data(), &renew, t0));
}

TEST(TicketKeyRing, OneRingPerListenerForTheProcess) {
  auto a = TicketKeyRing::for_listener("tls-a", 60s);
  auto b = TicketKeyRing::for_listener("tls-b", 60s);
  EXPECT_NE(a.get(), b.get());
  EXPECT_EQ(TicketKeyRing::for_listener("tls-a", 120s).get(), a.get());  // survives reloads
  EXPECT_EQ(a->period(), 120s);
}

// A self-signed certificate with the given subject CNs and SANs (type, bytes).
struct Cert {
  X509* x = nullptr;
  EVP_PKEY* key = nullptr;
  ~Cert() {
    X509_free(x);
    EVP_PKEY_free(key);
  }
};

void make_cert(Cert* c, const std::vector<std::string>& cns,
               const std::vector<std::pair<int, std::string>>& sans) {
  c->key = EVP_EC_gen("P-256");
  c->x = X509_new();
  X509_set_version(c->x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(c->x), 42);
  X509_gmtime_adj(X509_getm_notBefore(c->x), 0);
  X509_gmtime_adj(X509_getm_notAfter(c->x), 3600);
  X509_NAME* name = X509_get_subject_name(c->x);
  for (const auto& cn : cns) {
    X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(cn.data()),
                               static_cast<int>(cn.size()), -1, 0);
  }
  X509_set_issuer_name(c->x, name);
  if (!sans.empty()) {
    GENERAL_NAMES* gens = sk_GENERAL_NAME_new_null();
    for (const auto& [type, value] : sans) {
      GENERAL_NAME* g = GENERAL_NAME_new();
      ASN1_IA5STRING* s = ASN1_IA5STRING_new();
      ASN1_STRING_set(s, value.data(), static_cast<int>(value.size()));
      GENERAL_NAME_set0_value(g, type, s);
      sk_GENERAL_NAME_push(gens, g);
    }
    X509_add1_ext_i2d(c->x, NID_subject_alt_name, gens, 0, 0);
    GENERAL_NAMES_free(gens);
  }
  X509_set_pubkey(c->x, c->key);
  X509_sign(c->x, c->key, EVP_sha256());
}

TEST(CertIdentity, CommonNameAndSans) {
  Cert c;
  make_cert(&c, {"alice"},
            {{GEN_EMAIL, "alice@corp.example"},
             {GEN_DNS, "laptop7.corp.example"},
             {GEN_URI, "spiffe://corp/alice"}});
  EXPECT_EQ(describe_certificate(c.x, CertIdentity::kCommonName).user, "alice");
  EXPECT_EQ(describe_certificate(c.x, CertIdentity::kSanEmail).user, "alice@corp.example");
  EXPECT_EQ(describe_certificate(c.x, CertIdentity::kSanDns).user, "laptop7.corp.example");
  EXPECT_EQ(describe_certificate(c.x, CertIdentity::kSanUri).user, "spiffe://corp/alice");
  auto info = describe_certificate(c.x, CertIdentity::kCommonName);
  EXPECT_EQ(info.subject, "CN=alice");
  EXPECT_EQ(info.serial, "2A");
  EXPECT_EQ(info.sha256.size(), 64u);
  EXPECT_EQ(spki_sha256_hex(c.x).size(), 64u);
}

TEST(CertIdentity, ByteExactNoNulNoAmbiguity) {
  Cert nul;
  make_cert(&nul, {std::string("alice\0.evil", 11)}, {{GEN_EMAIL, std::string("a@x\0b@y", 7)}});
  auto cn = describe_certificate(nul.x, CertIdentity::kCommonName);
  EXPECT_FALSE(cn.user);
  EXPECT_NE(cn.identity_error.find("NUL"), std::string::npos) << cn.identity_error;
  EXPECT_FALSE(describe_certificate(nul.x, CertIdentity::kSanEmail).user);

  Cert two;
  make_cert(&two, {"alice", "bob"}, {{GEN_EMAIL, "a@x"}, {GEN_EMAIL, "b@x"}});
  EXPECT_FALSE(describe_certificate(two.x, CertIdentity::kCommonName).user);
  auto e = describe_certificate(two.x, CertIdentity::kSanEmail);
  EXPECT_FALSE(e.user);
  EXPECT_NE(e.identity_error.find("ambiguous"), std::string::npos);

  Cert none;
  make_cert(&none, {"Alice "}, {});
  EXPECT_EQ(describe_certificate(none.x, CertIdentity::kCommonName).user, "Alice ");  // exact
  auto d = describe_certificate(none.x, CertIdentity::kSanDns);
  EXPECT_FALSE(d.user);
  EXPECT_EQ(d.identity_error, "certificate has no DNS SAN");
}

class TlsContextFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("sg-tls-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const Cert& c, const std::string& stem) {
    std::string cert = (dir_ / (stem + ".pem")).string(), key = (dir_ / (stem + ".key")).string();
    FILE* f = std::fopen(cert.c_str(), "w");
    PEM_write_X509(f, c.x);
    std::fclose(f);
    f = std::fopen(key.c_str(), "w");
    PEM_write_PrivateKey(f, c.key, nullptr, nullptr, 0, nullptr, nullptr);
    std::fclose(f);
    return (dir_ / stem).string();
  }
  std::filesystem::path dir_;
};

TEST_F(TlsContextFiles, LoadsAPairAndRefusesAMismatch) {
  Cert a, b;
  make_cert(&a, {"localhost"}, {});
  make_cert(&b, {"localhost"}, {});
  std::string pa = write(a, "a"), pb = write(b, "b");
  TlsServerSettings s;
  s.listener = "t";
  s.cert_file = pa + ".pem";
  s.key_file = pa + ".key";
  auto ctx = TlsServerContext::create(s);
  ASSERT_TRUE(ctx);
  EXPECT_EQ(ctx->spki_sha256(), spki_sha256_hex(a.x));
  s.key_file = pb + ".key";
  try {
    TlsServerContext::create(s);
    FAIL() << "mismatched pair accepted";
  } catch (const TlsError& e) {
    EXPECT_NE(std::string(e.what()).find("does not match"), std::string::npos) << e.what();
  }
  s.key_file = pa + ".missing";
  EXPECT_THROW(TlsServerContext::create(s), TlsError);
  s.key_file = pa + ".key";
  s.client_cert = ClientCertMode::kRequired;
  s.ca_file = pa + ".nope";
  EXPECT_THROW(TlsServerContext::create(s), TlsError);
}

TEST_F(TlsContextFiles, ClientContextNeedsAWayToVerifyTheGateway) {
  TlsClientSettings s;
  s.server_name = "localhost";
  EXPECT_THROW(TlsClientContext::create(s), TlsError);
  s.pin_sha256 = std::string(64, 'a');
  EXPECT_TRUE(TlsClientContext::create(s));
}

}  // namespace
}  // namespace socksgate::crypto
