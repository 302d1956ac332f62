#pragma once
namespace socksgate::gateway {
inline constexpr const char* kVersion = "0.1.0";
}  // namespace socksgate::gateway
