// IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or raw, and image classification
// datasets built from them: each image becomes a sequence of height*width pixel tokens in row-major
// order, pixel p (0..255, optionally quantised) as token p + 3, with the 2-D shape kept in the dataset.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "apps/data/dataset.h"

namespace longattn::data {

struct IdxArray {
  std::vector<int64_t> dims;  // e.g. {60000, 28, 28} for images, {60000} for labels
  std::vector<uint8_t> data;  // row-major, prod(dims) bytes
};

// Reads an unsigned-byte IDX file (magic 00 00 08 ndim, big-endian int32 dimensions, then the data),
// decompressing it if it is gzip'd (detected from the content, not the name). Throws DataError
// naming the file, the byte offset and the reason (bad magic, unsupported element type, truncation,
// trailing bytes, corrupt gzip stream).
IdxArray read_idx(const std::string& path);

struct ImageOptions {
  int levels = 256;       // quantise intensities to this many levels (256: keep them); vocab = 3 + levels
  int32_t num_classes = 0;  // 0: the largest label + 1
};

// Pairs an images file [N, H, W] with a labels file [N]; throws DataError when the counts disagree.
Dataset read_idx_images(const std::string& images_path, const std::string& labels_path, const ImageOptions& opt = {});

// Fashion-MNIST (or MNIST) from a folder holding train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz),
// t10k-images-idx3-ubyte(.gz) and t10k-labels-idx1-ubyte(.gz). The last n_val training images form the
// validation split; the t10k files are the test split. Default folder: Debian's dataset-fashion-mnist.
constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
Splits load_idx_folder(const std::string& dir, int64_t n_val = 5000, const ImageOptions& opt = {});

}  // namespace longattn::data
