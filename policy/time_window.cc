#include "policy/time_window.h"

#include <date/tz.h>

#include <array>
#include <cstdio>
#include <exception>

namespace socksgate::policy {
namespace {

constexpr std::array<std::string_view, 7> kDayNames = {"mon", "tue", "wed", "thu",
                                                       "fri", "sat", "sun"};
constexpr std::array<std::string_view, 7> kDayTitles = {"Mon", "Tue", "Wed", "Thu",
                                                        "Fri", "Sat", "Sun"};

template <class Duration>
TimeZone::Local split(date::local_time<Duration> lt) {
  auto day = date::floor<date::days>(lt);
  date::weekday wd{day};
  TimeZone::Local out;
  out.weekday = static_cast<int>(wd.iso_encoding()) - 1;
  out.seconds =
      static_cast<uint32_t>(std::chrono::duration_cast<std::chrono::seconds>(lt - day).count());
  return out;
}

}  // namespace

std::optional<TimeZone> TimeZone::find(std::string_view name, std::string* problem) {
  TimeZone tz;
  if (name == "UTC") return tz;
  try {
    const date::time_zone* z = date::locate_zone(name);
    // Reads the zone's transitions now: later look-ups never touch the file system.
    (void)z->get_info(date::sys_seconds{});
    tz.zone_ = z;
    tz.name_ = std::string(name);
    return tz;
  } catch (const std::exception& e) {
    if (problem != nullptr) *problem = e.what();
    return std::nullopt;
  }
}

TimeZone::Local TimeZone::local(std::chrono::system_clock::time_point t) const {
  auto secs = date::floor<std::chrono::seconds>(t);
  if (zone_ == nullptr) {
    return split(date::local_seconds{secs.time_since_epoch()});
  }
  return split(zone_->to_local(secs));
}

bool TimeWindow::contains(TimeZone::Local t) const {
  auto on = [&](int wd) { return (days >> wd) & 1; };
  if (!wraps()) return on(t.weekday) && t.seconds >= start && t.seconds < end;
  // Wraps past midnight: the evening part on a listed day, or the morning part on the day
  // after a listed day.
  int previous = (t.weekday + 6) % 7;
  return (on(t.weekday) && t.seconds >= start) || (on(previous) && t.seconds < end);
}

std::string TimeWindow::to_string() const {
  std::string out = days_text.empty() ? std::string("every day") : days_text;
  out += ' ';
  out += hours_text.empty() ? std::string("all day") : hours_text;
  out += ' ';
  out += tz.name();
  return out;
}

int weekday_from_name(std::string_view s) {
  for (size_t i = 0; i < kDayNames.size(); ++i) {
    if (kDayNames[i] == s) return static_cast<int>(i);
  }
  return -1;
}

std::string_view weekday_name(int weekday) {
  return weekday >= 0 && weekday < 7 ? kDayTitles[static_cast<size_t>(weekday)] : "?";
}

std::optional<uint32_t> parse_clock(std::string_view s, bool allow_24) {
  if (s.size() != 5 || s[2] != ':') return std::nullopt;
  for (size_t i : {0, 1, 3, 4}) {
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
  }
  uint32_t h = static_cast<uint32_t>((s[0] - '0') * 10 + (s[1] - '0'));
  uint32_t m = static_cast<uint32_t>((s[3] - '0') * 10 + (s[4] - '0'));
  if (m > 59) return std::nullopt;
  if (h == 24 && m == 0 && allow_24) return kSecondsPerDay;
  if (h > 23) return std::nullopt;
  return h * 3600 + m * 60;
}

std::string format_local(TimeZone::Local t) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%02u:%02u", t.seconds / 3600, (t.seconds / 60) % 60);
  return std::string(weekday_name(t.weekday)) + " " + buf;
}

}  // namespace socksgate::policy
