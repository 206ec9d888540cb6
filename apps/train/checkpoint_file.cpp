#include "apps/train/checkpoint_file.h"

#include <zlib.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <unistd.h>

namespace longattn::train {
namespace {
constexpr const char* kMagic = "#longattn-checkpoint v1";

uint32_t crc_of(const std::string& s) {
  uLong crc = crc32(0L, Z_NULL, 0);
  size_t done = 0;
  while (done < s.size()) {
    const uInt chunk = uInt(std::min<size_t>(s.size() - done, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(s.data() + done), chunk);
    done += chunk;
  }
  return uint32_t(crc);
}

[[noreturn]] void fail(const std::string& path, const std::string& why) {
  throw std::runtime_error("checkpoint " + path + ": " + why);
}
}  // namespace

void write_checkpoint_file(const std::string& path, const std::string& payload) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream os(tmp, std::ios::binary | std::ios::trunc);
    if (!os) fail(tmp, "cannot open for writing");
    os << kMagic << " bytes=" << payload.size() << " crc32=" << crc_of(payload) << '\n';
    os.write(payload.data(), std::streamsize(payload.size()));
    os.flush();
    if (!os) fail(tmp, "write failed (disk full?)");
  }
  // fsync before the rename, so the new name never points at data still in flight
  if (FILE* f = std::fopen(tmp.c_str(), "rb")) {
    ::fsync(fileno(f));
    std::fclose(f);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail(path, "cannot rename " + tmp + " to it");
}

std::string read_checkpoint_file(const std::string& path) {
  std::ifstream is(path, std::ios::binary);
  if (!is) fail(path, "cannot open (no such file?)");
  std::string header;
  if (!std::getline(is, header) || header.rfind(kMagic, 0) != 0) fail(path, "not a longattn checkpoint (bad header)");
  unsigned long long bytes = 0;
  unsigned long crc = 0;
  if (std::sscanf(header.c_str() + std::string(kMagic).size(), " bytes=%llu crc32=%lu", &bytes, &crc) != 2)
    fail(path, "malformed header '" + header + "'");
  std::string payload((std::istreambuf_iterator<char>(is)), std::istreambuf_iterator<char>());
  if (payload.size() < bytes)
    fail(path, "truncated: " + std::to_string(payload.size()) + " of " + std::to_string(bytes) + " payload bytes present");
  if (payload.size() > bytes) fail(path, "corrupted: " + std::to_string(payload.size() - bytes) + " bytes after the payload");
  if (crc_of(payload) != uint32_t(crc)) fail(path, "corrupted: the CRC-32 of the payload does not match the header");
  return payload;
}

}  // namespace longattn::train
