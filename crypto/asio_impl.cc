// Asio's non-template code, compiled once for the whole program (ASIO_SEPARATE_COMPILATION)
// instead of in every translation unit: it roughly halves build times.
#include <asio/impl/src.hpp>
