#pragma once
// Time windows for policy rules ("when"): days of the week and a time of day in a named IANA
// time zone. Time-zone rules come from the OS tzdata (/usr/share/zoneinfo) through Howard
// Hinnant's date/tz (built with USE_OS_TZDB); GCC 12's libstdc++ has no std::chrono::tzdb.
//
// A window is [start, end) in local wall-clock time on each listed day. When end <= start the
// window wraps past midnight: "22:00-06:00" on "fri" is Friday 22:00 to Saturday 06:00, i.e.
// the days name the day a window starts. Local time is what a wall clock in the zone shows, so
// across a DST change a window keeps its wall-clock hours (an hour that is skipped never
// matches, an hour that repeats matches twice).

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace date {
class time_zone;
}

namespace socksgate::policy {

constexpr uint32_t kSecondsPerDay = 86400;
constexpr uint8_t kEveryDay = 0x7f;

// A zone, resolved once at load time. Copyable handle; the zone data lives for the process.
class TimeZone {
 public:
  TimeZone() = default;  // UTC
  // Looks the zone up and reads its transitions now (so that decisions never touch the file
  // system, e.g. after a chroot). nullopt and *problem set when it is not a valid IANA zone.
  static std::optional<TimeZone> find(std::string_view name, std::string* problem);
  const std::string& name() const { return name_; }
  bool is_utc() const { return zone_ == nullptr; }

  // Local wall-clock time of `t` in this zone.
  struct Local {
    int weekday = 0;       // 0 = Monday ... 6 = Sunday
    uint32_t seconds = 0;  // since local midnight
  };
  Local local(std::chrono::system_clock::time_point t) const;

 private:
  const date::time_zone* zone_ = nullptr;  // nullptr = UTC
  std::string name_ = "UTC";
};

struct TimeWindow {
  uint8_t days = kEveryDay;  // bit per weekday, bit 0 = Monday
  uint32_t start = 0;        // seconds since local midnight
  uint32_t end = kSecondsPerDay;
  TimeZone tz;
  std::string days_text;   // as written ("mon-fri", "sat,sun"); empty = every day
  std::string hours_text;  // as written ("08:00-18:30"); empty = the whole day

  bool wraps() const { return end <= start; }
  bool contains(TimeZone::Local t) const;
  bool contains(std::chrono::system_clock::time_point t) const { return contains(tz.local(t)); }
  // "mon-fri 08:00-18:30 Europe/Berlin", "every day 22:00-06:00 UTC".
  std::string to_string() const;
};

// "mon".."sun" -> 0..6; -1 if not a day name.
int weekday_from_name(std::string_view s);
std::string_view weekday_name(int weekday);  // "Mon".."Sun"
// "HH:MM" -> seconds since midnight; "24:00" only with allow_24. nullopt if malformed.
std::optional<uint32_t> parse_clock(std::string_view s, bool allow_24);
// "Tue 19:05".
std::string format_local(TimeZone::Local t);

}  // namespace socksgate::policy
