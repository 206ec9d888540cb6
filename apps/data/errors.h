// Errors raised while reading or generating data.
//
// Every malformed input stops with the file, the place in it and the reason; nothing is skipped.
// The message reads like a compiler diagnostic, "path:line: reason" for text files and
// "path: byte N: reason" for binary ones, so editors and terminals can jump to it.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace longattn::data {

class DataError : public std::runtime_error {
 public:
  // line >= 1 names a line of a text file; line == 0 means the error concerns the whole file.
  DataError(const std::string& file, int64_t line, const std::string& reason)
      : std::runtime_error(file + (line > 0 ? ":" + std::to_string(line) : std::string()) + ": " + reason),
        file_(file), line_(line), reason_(reason) {}

  // For binary files: the byte offset where the problem was found.
  static DataError at_byte(const std::string& file, int64_t offset, const std::string& reason) {
    return DataError(file, 0, "byte " + std::to_string(offset) + ": " + reason);
  }

  const std::string& file() const { return file_; }
  int64_t line() const { return line_; }
  const std::string& reason() const { return reason_; }

 private:
  std::string file_;
  int64_t line_;
  std::string reason_;
};

}  // namespace longattn::data
