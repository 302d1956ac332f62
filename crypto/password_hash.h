#pragma once
// Password hashes in crypt(3) form, as /etc/shadow and htpasswd write them, through
// libcrypt (libxcrypt): yescrypt ($y$), sha512-crypt ($6$), sha256-crypt ($5$),
// bcrypt ($2b$/$2y$/$2a$), scrypt ($7$) and gost-yescrypt ($gy$). DES, MD5 ($1$, $apr1$)
// and NT hashes are refused: they are too weak for a gateway's passwords.
//
// All functions are thread-safe and blocking (yescrypt costs tens of milliseconds by
// design): call them on a BlockingPool, never on an I/O thread.

#include <string>
#include <string_view>

namespace socksgate::crypto {

// Why a stored hash cannot be used; empty if it can.
std::string check_hash_format(std::string_view hash);

// True when `password` hashes to `hash`. The final comparison is constant-time. A malformed
// or unsupported hash never verifies.
bool verify_password(std::string_view password, std::string_view hash);

// A fresh yescrypt hash with a random salt (libcrypt's default cost). Throws on failure
// (control plane only).
std::string hash_password(std::string_view password);

}  // namespace socksgate::crypto
