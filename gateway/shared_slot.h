#pragma once
// SharedSlot<T>: a shared_ptr that one thread replaces (a reload) while others copy it (a new
// session, a scrape). That is what std::atomic<std::shared_ptr<T>> is for, but libstdc++ 12's
// implementation releases its internal lock with a relaxed store after a load, so a later store
// is not ordered after the read: ThreadSanitizer reports it (CI did, for the configuration
// snapshot on reload), and the memory model agrees. A mutex held for one pointer copy costs
// tens of nanoseconds uncontended; readers take it once per session or event, never per byte.

#include <memory>
#include <mutex>
#include <utility>

namespace socksgate::gateway {

template <typename T>
class SharedSlot {
 public:
  SharedSlot() = default;
  explicit SharedSlot(std::shared_ptr<T> p) : p_(std::move(p)) {}
  SharedSlot(const SharedSlot&) = delete;
  SharedSlot& operator=(const SharedSlot&) = delete;

  std::shared_ptr<T> load() const {
    std::lock_guard lock(mu_);
    return p_;
  }
  void store(std::shared_ptr<T> p) {
    {
      std::lock_guard lock(mu_);
      p_.swap(p);
    }
    // The previous value (now in p) is released here, outside the lock: its destructor may be
    // long (a whole configuration snapshot).
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<T> p_;  // GUARDED_BY(mu_)
};

}  // namespace socksgate::gateway
