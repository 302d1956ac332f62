// Fuzzes the policy loader end to end: JSON with positions, then the policy schema. A LoadError
// is the expected answer to bad input; anything else escaping, or a crash, is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "policy/lint.h"
#include "policy/policy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    socksgate::policy::Policy p = socksgate::policy::load_policy_text("fuzz.json", text);
    // Exercise the compiled form too: a loaded policy must decide without throwing.
    socksgate::policy::DecisionRequest r;
    r.user = "alice";
    r.host = "www.example";
    r.address = socksgate::policy::IpAddress::parse("10.0.0.1");
    r.port = 443;
    r.time = std::chrono::system_clock::time_point(std::chrono::seconds(1795600000));
    std::vector<socksgate::policy::TraceStep> trace;
    (void)p.decide(r, &trace);
    r.address.reset();
    (void)p.decide(r, &trace);
    (void)p.decide_client({}, &trace);
    // validate's checks run on whatever loads.
    socksgate::policy::LintContext ctx;
    ctx.known_user = [](std::string_view u) { return u == "alice"; };
    ctx.users_source = "the password file";
    (void)socksgate::policy::lint(p, ctx);
  } catch (const socksgate::policy::LoadError&) {
  }
  return 0;
}
