// Helpers for data tests: files in the test's temporary folder, and checks on DataError messages.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <string>

#include "apps/data/errors.h"

namespace data_test {

// A file under the GoogleTest temporary folder, removed when the object goes.
struct TempFile {
  std::string path;
  explicit TempFile(const std::string& name, const std::string& content = "") {
    path = ::testing::TempDir() + "longattn_data_" + std::to_string(::getpid()) + "_" + name;
    std::ofstream(path, std::ios::binary) << content;
  }
  ~TempFile() { std::remove(path.c_str()); }
};

// Runs f, expects a DataError whose message starts with "<file>:<line>: " (or "<file>: " when line
// is 0) and contains `reason`.
inline void expect_data_error(const std::function<void()>& f, const std::string& file, int64_t line,
                              const std::string& reason) {
  try {
    f();
    ADD_FAILURE() << "expected DataError(" << file << ", " << line << ", ..." << reason << "...)";
  } catch (const longattn::data::DataError& e) {
    const std::string msg = e.what();
    const std::string prefix = file + (line > 0 ? ":" + std::to_string(line) : std::string()) + ": ";
    EXPECT_EQ(msg.rfind(prefix, 0), 0u) << "message: " << msg << "\nexpected prefix: " << prefix;
    EXPECT_NE(msg.find(reason), std::string::npos) << "message: " << msg << "\nexpected reason: " << reason;
    EXPECT_EQ(e.file(), file);
    EXPECT_EQ(e.line(), line);
  }
}

}  // namespace data_test
