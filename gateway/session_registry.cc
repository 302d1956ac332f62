#include "gateway/session_registry.h"

#include <vector>

namespace socksgate::gateway {

SessionRegistry::Admit SessionRegistry::admit(uint64_t id, const std::string& source,
                                              uint32_t max_total, uint32_t max_per_source,
                                              Closer closer, Origin origin) {
  std::lock_guard lock(mu_);
  if (max_total != 0 && sessions_.size() >= max_total) return Admit::kGlobalLimit;
  uint32_t& n = per_source_[source];
  if (max_per_source != 0 && n >= max_per_source) {
    if (n == 0) per_source_.erase(source);
    return Admit::kSourceLimit;
  }
  ++n;
  Entry e;
  e.source = source;
  e.closer = std::move(closer);
  e.origin = std::move(origin);
  sessions_.emplace(id, std::move(e));
  return Admit::kOk;
}

bool SessionRegistry::admit_user(uint64_t id, const std::string& user, uint32_t max_per_user) {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return false;
  uint32_t& n = per_user_[user];
  if (max_per_user != 0 && n >= max_per_user) {
    if (n == 0) per_user_.erase(user);
    return false;
  }
  ++n;
  it->second.user = user;
  it->second.user_counted = true;
  return true;
}

bool SessionRegistry::admit_bind(uint64_t id, const std::string& user, uint32_t max_per_user) {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second.bind_counted) return false;
  uint32_t& n = binds_per_user_[user];
  if (max_per_user != 0 && n >= max_per_user) {
    if (n == 0) binds_per_user_.erase(user);
    return false;
  }
  ++n;
  it->second.bind_counted = true;
  it->second.user = user;
  return true;
}

void SessionRegistry::remove(uint64_t id) {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  if (auto s = per_source_.find(it->second.source); s != per_source_.end() && --s->second == 0) {
    per_source_.erase(s);
  }
  if (it->second.user_counted) {
    if (auto u = per_user_.find(it->second.user); u != per_user_.end() && --u->second == 0) {
      per_user_.erase(u);
    }
  }
  if (it->second.bind_counted) {
    if (auto b = binds_per_user_.find(it->second.user);
        b != binds_per_user_.end() && --b->second == 0) {
      binds_per_user_.erase(b);
    }
  }
  sessions_.erase(it);
}

size_t SessionRegistry::active() const {
  std::lock_guard lock(mu_);
  return sessions_.size();
}

size_t SessionRegistry::active_for_user(const std::string& user) const {
  std::lock_guard lock(mu_);
  auto it = per_user_.find(user);
  return it == per_user_.end() ? 0 : it->second;
}

void SessionRegistry::describe(uint64_t id, const std::string& user, const std::string& method,
                               const std::string& command, const std::string& target) {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  if (!it->second.user_counted && !it->second.bind_counted) it->second.user = user;
  it->second.method = method;
  it->second.command = command;
  it->second.target = target;
}

void SessionRegistry::close_all(CloseReason why) {
  std::vector<Closer> closers;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, e] : sessions_) closers.push_back(e.closer);
  }
  for (auto& c : closers) {
    if (c) c(why);
  }
}

size_t SessionRegistry::close_user(const std::string& user, CloseReason why) {
  std::vector<Closer> closers;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, e] : sessions_) {
      if (!e.user.empty() && e.user == user) closers.push_back(e.closer);
    }
  }
  for (auto& c : closers) {
    if (c) c(why);
  }
  return closers.size();
}

void SessionRegistry::set_recheck(uint64_t id, Recheck recheck) {
  std::lock_guard lock(mu_);
  if (auto it = sessions_.find(id); it != sessions_.end()) it->second.recheck = std::move(recheck);
}

size_t SessionRegistry::recheck_all() {
  std::vector<Recheck> checks;
  {
    std::lock_guard lock(mu_);
    for (auto& [id, e] : sessions_) {
      if (e.recheck) checks.push_back(e.recheck);
    }
  }
  for (auto& c : checks) c();
  return checks.size();
}

std::vector<SessionView> SessionRegistry::list() const {
  auto now = std::chrono::steady_clock::now();
  std::vector<SessionView> out;
  std::lock_guard lock(mu_);
  out.reserve(sessions_.size());
  for (const auto& [id, e] : sessions_) {
    SessionView v;
    v.id = id;
    v.listener = e.origin.listener;
    v.client = e.origin.client;
    v.user = e.user;
    v.method = e.method;
    v.command = e.command;
    v.target = e.target;
    if (e.origin.bytes_up) v.bytes_up = e.origin.bytes_up->load(std::memory_order_relaxed);
    if (e.origin.bytes_down) v.bytes_down = e.origin.bytes_down->load(std::memory_order_relaxed);
    v.age = now - e.start;
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace socksgate::gateway
