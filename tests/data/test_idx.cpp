#include <gtest/gtest.h>
#include <sys/stat.h>
#include <zlib.h>

#include <string>
#include <vector>

#include "apps/data/idx.h"
#include "temp_file.h"

using namespace longattn::data;
using data_test::expect_data_error;
using data_test::TempFile;

namespace {

std::string idx_bytes(const std::vector<int64_t>& dims, const std::vector<uint8_t>& data, uint8_t type = 0x08) {
  std::string s{char(0), char(0), char(type), char(dims.size())};
  for (int64_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) s += char((d >> shift) & 0xFF);
  s.append(data.begin(), data.end());
  return s;
}

// Writes `content` gzip-compressed to a temporary file.
struct GzFile {
  TempFile file;
  GzFile(const std::string& name, const std::string& content) : file(name) {
    gzFile f = gzopen(file.path.c_str(), "wb");
    gzwrite(f, content.data(), unsigned(content.size()));
    gzclose(f);
  }
};

const std::vector<uint8_t> kPixels = {0, 10, 255, 128, 7, 9, 1, 2, 3, 4, 5, 6};  // 2 images of 2x3

}  // namespace

TEST(Idx, ReadsRawAndGzip) {
  TempFile raw("raw-images-idx3-ubyte", idx_bytes({2, 2, 3}, kPixels));
  GzFile gz("gz-images-idx3-ubyte.gz", idx_bytes({2, 2, 3}, kPixels));
  for (const std::string& p : {raw.path, gz.file.path}) {
    const IdxArray a = read_idx(p);
    EXPECT_EQ(a.dims, (std::vector<int64_t>{2, 2, 3}));
    EXPECT_EQ(a.data, kPixels);
  }
}

TEST(Idx, ImagesBecomeTokenSequencesWithTheirShape) {
  TempFile images("img-idx3-ubyte", idx_bytes({2, 2, 3}, kPixels));
  GzFile labels("lab-idx1-ubyte.gz", idx_bytes({2}, {4, 1}));
  const Dataset d = read_idx_images(images.path, labels.file.path);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d.height, 2);
  EXPECT_EQ(d.width, 3);
  EXPECT_EQ(d.vocab_size, 3 + 256);
  EXPECT_EQ(d.num_classes, 5);
  EXPECT_EQ(d.examples[0].label, 4);
  EXPECT_EQ(d.examples[0].tokens, (std::vector<int32_t>{3, 13, 258, 131, 10, 12}));
  ImageOptions q;
  q.levels = 4;  // p * 4 / 256
  EXPECT_EQ(read_idx_images(images.path, labels.file.path, q).examples[0].tokens, (std::vector<int32_t>{3, 3, 6, 5, 3, 3}));
}

TEST(Idx, MalformedFilesNameFileOffsetAndReason) {
  std::string full = idx_bytes({2, 2, 3}, kPixels);
  TempFile truncated("trunc-idx3-ubyte", full.substr(0, full.size() - 5));
  expect_data_error([&] { read_idx(truncated.path); }, truncated.path, 0, "byte 23: truncated: the file ends inside the data (7 of 12 bytes present");
  GzFile truncated_gz("trunc.gz", full.substr(0, 10));
  expect_data_error([&] { read_idx(truncated_gz.file.path); }, truncated_gz.file.path, 0, "truncated: the file ends inside the dimension sizes");
  // A gzip stream cut short (the compressed bytes themselves truncated).
  GzFile whole_gz("whole.gz", full);
  std::string gz_bytes;
  {
    std::ifstream is(whole_gz.file.path, std::ios::binary);
    gz_bytes.assign(std::istreambuf_iterator<char>(is), {});
  }
  TempFile cut_gz("cut.gz", gz_bytes.substr(0, gz_bytes.size() / 2));
  EXPECT_THROW(read_idx(cut_gz.path), DataError);
  TempFile magic("magic-idx", "\x01\x02\x08\x01\x00\x00\x00\x01x");
  expect_data_error([&] { read_idx(magic.path); }, magic.path, 0, "byte 0: not an IDX file");
  TempFile floats("float-idx", idx_bytes({1}, {0, 0, 0, 0}, 0x0D));
  expect_data_error([&] { read_idx(floats.path); }, floats.path, 0, "element type 0x0D (float32) is not supported");
  TempFile trailing("trailing-idx", idx_bytes({2, 2, 3}, kPixels) + "zz");
  expect_data_error([&] { read_idx(trailing.path); }, trailing.path, 0, "byte 28: trailing bytes");
  TempFile zero_dim("zero-idx", idx_bytes({0}, {}));
  expect_data_error([&] { read_idx(zero_dim.path); }, zero_dim.path, 0, "dimension 0 has size 0");
  expect_data_error([&] { read_idx("/nonexistent/x-idx"); }, "/nonexistent/x-idx", 0, "no such file");
  TempFile images("count-images", idx_bytes({2, 2, 3}, kPixels));
  TempFile labels("count-labels", idx_bytes({3}, {0, 1, 2}));
  expect_data_error([&] { read_idx_images(images.path, labels.path); }, labels.path, 0, "holds 3 labels but");
}

TEST(Idx, FashionMnistFromDebianPackage) {
  struct stat st;
  const std::string dir = kFashionMnistDir;
  if (stat((dir + "/t10k-images-idx3-ubyte.gz").c_str(), &st) != 0) GTEST_SKIP() << "dataset-fashion-mnist not installed";
  // Only the test files (10k images), to keep the test fast and small.
  ImageOptions o;
  o.num_classes = 10;
  const Dataset d = read_idx_images(dir + "/t10k-images-idx3-ubyte.gz", dir + "/t10k-labels-idx1-ubyte.gz", o);
  ASSERT_EQ(d.size(), 10000u);
  EXPECT_EQ(d.height, 28);
  EXPECT_EQ(d.width, 28);
  std::vector<int> per_class(10, 0);
  for (const auto& e : d.examples) {
    ASSERT_EQ(e.tokens.size(), 784u);
    per_class[size_t(e.label)]++;
  }
  for (int c = 0; c < 10; ++c) EXPECT_EQ(per_class[size_t(c)], 1000) << "class " << c;  // the test set is balanced
}
