#include "crypto/gss.h"

namespace socksgate::crypto {
namespace {

void append_status(OM_uint32 code, int type, gss_OID mech, std::string* out) {
  OM_uint32 ctx = 0;
  // gss_display_status may yield several messages for one code; a bound keeps a broken library
  // from looping us forever.
  for (int i = 0; i < 8; ++i) {
    OM_uint32 minor;
    GssBuffer msg;
    OM_uint32 major = gss_display_status(&minor, code, type, mech, &ctx, msg.get());
    if (GSS_ERROR(major)) break;
    if (!msg.empty()) {
      if (!out->empty()) out->append("; ");
      out->append(msg.str());
    }
    if (ctx == 0) break;
  }
}

}  // namespace

std::string gss_status_text(OM_uint32 major, OM_uint32 minor, gss_OID mech) {
  std::string text;
  append_status(major, GSS_C_GSS_CODE, GSS_C_NO_OID, &text);
  if (minor != 0) append_status(minor, GSS_C_MECH_CODE, mech, &text);
  if (text.empty()) text = "GSS-API major status " + std::to_string(major);
  return text;
}

}  // namespace socksgate::crypto
