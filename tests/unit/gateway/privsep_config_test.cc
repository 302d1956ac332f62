// Config of the PAM back-end and of run_as, and plan_drop's checks (names, chroot rules).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "gateway/config.h"
#include "gateway/privsep.h"

namespace socksgate::gateway {
namespace {

std::string all_errors(const std::string& text) {
  try {
    load_snapshot_text("cfg.json", text, nullptr);
  } catch (const policy::LoadError& e) {
    std::string out;
    for (const auto& d : e.diagnostics()) out += d.to_string() + "\n";
    return out;
  }
  return "";
}

std::string config(const std::string& userpass, const std::string& extra = "") {
  return R"({ "listeners": [ { "name": "m", "address": "127.0.0.1", "port": 0,
                               "methods": ["userpass"] } ],
              "auth": { "userpass": )" +
         userpass + R"( },
              "policy": { "inline": { "rules": [ { "id": "r", "action": "block" } ] } })" +
         extra + "}";
}

TEST(PamConfig, BackendPamWithDefaults) {
  Snapshot s = load_snapshot_text("cfg.json", config(R"({"backend": "pam"})"), nullptr);
  ASSERT_NE(s.backends.userpass, nullptr);
  const auto& st = s.backends.userpass->settings();
  EXPECT_EQ(st.backend, auth::userpass::UserPassBackendKind::kPam);
  EXPECT_EQ(st.pam_service, "socksgate");
  EXPECT_EQ(st.pam_timeout.count(), 30000);
}

TEST(PamConfig, ServiceAndTimeout) {
  Snapshot s = load_snapshot_text(
      "cfg.json", config(R"({"backend": "pam", "pam_service": "vpn", "pam_timeout_ms": 5000})"),
      nullptr);
  EXPECT_EQ(s.backends.userpass->settings().pam_service, "vpn");
  EXPECT_EQ(s.backends.userpass->settings().pam_timeout.count(), 5000);
}

TEST(PamConfig, MistakesAreReportedWithTheirPlace) {
  EXPECT_NE(
      all_errors(config(R"({"backend": "ldap"})")).find("\"backend\" must be \"file\" or \"pam\""),
      std::string::npos);
  std::string e = all_errors(config(R"({"backend": "pam", "file": "u", "cache_ttl_s": 5})"));
  EXPECT_NE(e.find("\"file\" is for backend \"file\" only"), std::string::npos) << e;
  EXPECT_NE(e.find("\"cache_ttl_s\" is for backend \"file\" only"), std::string::npos) << e;
  e = all_errors(config(R"({"users": {}, "pam_service": "x"})"));
  EXPECT_NE(e.find("\"pam_service\" is for backend \"pam\" only"), std::string::npos) << e;
  e = all_errors(config(R"({"backend": "pam", "pam_service": "../etc/x"})"));
  EXPECT_NE(e.find("must be a PAM service name"), std::string::npos) << e;
  e = all_errors(config(R"({"backend": "pam", "pam_timeout_ms": 10})"));
  EXPECT_NE(e.find("between 1000 and 120000"), std::string::npos) << e;
  EXPECT_EQ(e.rfind("cfg.json:", 0), 0u) << e;
}

TEST(RunAsConfig, DefaultIsNobody) {
  Snapshot s = load_snapshot_text("cfg.json", config(R"({"backend": "pam"})"), nullptr);
  EXPECT_EQ(s.config->run_as.user, "nobody");
  EXPECT_EQ(s.config->run_as.group, "");
  EXPECT_EQ(s.config->run_as.chroot, "");
}

TEST(RunAsConfig, KeysAndMistakes) {
  Snapshot s = load_snapshot_text(
      "cfg.json",
      config(R"({"backend": "pam"})",
             R"(, "run_as": {"user": "daemon", "group": "daemon", "chroot": "/var/empty"})"),
      nullptr);
  EXPECT_EQ(s.config->run_as.user, "daemon");
  EXPECT_EQ(s.config->run_as.group, "daemon");
  EXPECT_EQ(s.config->run_as.chroot, "/var/empty");
  std::string e = all_errors(config(R"({"backend": "pam"})", R"(, "run_as": {"user": "root"})"));
  EXPECT_NE(e.find("must not be root"), std::string::npos) << e;
  e = all_errors(config(R"({"backend": "pam"})", R"(, "run_as": {"chroot": "rel/dir"})"));
  EXPECT_NE(e.find("\"chroot\" must be an absolute path"), std::string::npos) << e;
  e = all_errors(config(R"({"backend": "pam"})", R"(, "run_as": {"uid": 5})"));
  EXPECT_NE(e.find("unknown key \"uid\""), std::string::npos) << e;
}

TEST(PlanDrop, ResolvesNamesAndRefusesRoot) {
  DropPlan p = plan_drop(RunAsConfig{});
  EXPECT_EQ(p.user, "nobody");
  EXPECT_EQ(p.group, "nogroup");
  EXPECT_NE(p.uid, 0u);
  EXPECT_NE(p.gid, 0u);
  RunAsConfig c;
  c.user = "no-such-user-socksgate";
  EXPECT_THROW(plan_drop(c), std::runtime_error);
  c.user = "root";
  EXPECT_THROW(plan_drop(c), std::runtime_error);
  c.user = "nobody";
  c.group = "root";
  EXPECT_THROW(plan_drop(c), std::runtime_error);
  c.group = "no-such-group-socksgate";
  EXPECT_THROW(plan_drop(c), std::runtime_error);
}

TEST(PlanDrop, ChrootMustBeARootOwnedDirectoryNobodyElseWrites) {
  RunAsConfig c;
  c.chroot = "/nonexistent-socksgate-chroot";
  EXPECT_THROW(plan_drop(c), std::runtime_error);
  auto dir = std::filesystem::temp_directory_path() / ("sg-chroot-" + std::to_string(::getpid()));
  std::filesystem::create_directory(dir);
  ::chmod(dir.c_str(), 0755);
  c.chroot = dir.string();
  if (::geteuid() == 0) {
    EXPECT_EQ(plan_drop(c).chroot, dir.string());
  }
  ::chmod(dir.c_str(), 0777);
  EXPECT_THROW(plan_drop(c), std::runtime_error);
  std::filesystem::remove(dir);
}

}  // namespace
}  // namespace socksgate::gateway
