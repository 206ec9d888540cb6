// The checkpoint container: a header line with the payload's size and CRC-32, then the payload
// (a torch archive). Written to a temporary file and renamed, so a crash mid-write never leaves a
// corrupt checkpoint under the real name; read back with the size and checksum verified, so a
// truncated or damaged file is reported as such instead of failing somewhere inside torch.
#pragma once

#include <string>

namespace longattn::train {

void write_checkpoint_file(const std::string& path, const std::string& payload);
// Throws std::runtime_error "checkpoint PATH: reason" (missing, not a checkpoint, truncated, corrupted).
std::string read_checkpoint_file(const std::string& path);

}  // namespace longattn::train
