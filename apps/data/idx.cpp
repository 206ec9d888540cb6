#include "apps/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <sys/stat.h>

#include "apps/data/errors.h"

namespace longattn::data {
namespace {

// A gzip or raw file read sequentially; zlib's gzread passes non-gzip content through unchanged.
class ByteReader {
 public:
  explicit ByteReader(const std::string& path) : path_(path) {
    f_ = gzopen(path.c_str(), "rb");
    if (!f_) throw DataError(path, 0, "cannot open for reading");
    gzbuffer(f_, 1 << 16);
  }
  ~ByteReader() { gzclose(f_); }
  ByteReader(const ByteReader&) = delete;
  ByteReader& operator=(const ByteReader&) = delete;

  // Reads exactly n bytes or throws, naming what was being read.
  void read(void* dst, int64_t n, const char* what) {
    auto* p = static_cast<unsigned char*>(dst);
    int64_t left = n;
    while (left > 0) {
      const unsigned chunk = unsigned(std::min<int64_t>(left, 1 << 30));
      const int got = gzread(f_, p, chunk);
      if (got < 0) {
        int code;
        const char* msg = gzerror(f_, &code);
        throw DataError::at_byte(path_, offset_, std::string("corrupt gzip stream while reading ") + what + ": " + msg);
      }
      if (got == 0) {
        int code;
        const char* msg = gzerror(f_, &code);
        throw DataError::at_byte(path_, offset_, std::string("truncated: the file ends inside ") + what + " (" +
                                                     std::to_string(n - left) + " of " + std::to_string(n) +
                                                     " bytes present" + (code ? std::string(", ") + msg : "") + ")");
      }
      p += got;
      left -= got;
      offset_ += got;
    }
  }

  bool at_end() {
    unsigned char c;
    const int got = gzread(f_, &c, 1);
    if (got < 0) {
      int code;
      throw DataError::at_byte(path_, offset_, std::string("corrupt gzip stream: ") + gzerror(f_, &code));
    }
    return got == 0;
  }

  int64_t offset() const { return offset_; }

 private:
  std::string path_;
  gzFile f_;
  int64_t offset_ = 0;  // in the decompressed stream
};

const char* type_name(unsigned t) {
  switch (t) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return "unknown";
  }
}

}  // namespace

IdxArray read_idx(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) throw DataError(path, 0, "no such file");
  if (S_ISDIR(st.st_mode)) throw DataError(path, 0, "is a folder, expected an IDX file");
  ByteReader in(path);
  unsigned char magic[4];
  in.read(magic, 4, "the magic number");
  if (magic[0] != 0 || magic[1] != 0)
    throw DataError::at_byte(path, 0, "not an IDX file: the magic number must start with two zero bytes");
  if (magic[2] != 0x08)
    throw DataError::at_byte(path, 2, "element type 0x" + [&] {
      char b[3];
      snprintf(b, sizeof b, "%02X", magic[2]);
      return std::string(b);
    }() + " (" + type_name(magic[2]) + ") is not supported; only unsigned bytes (0x08)");
  const int ndim = magic[3];
  if (ndim < 1 || ndim > 4) throw DataError::at_byte(path, 3, "unsupported number of dimensions " + std::to_string(ndim));
  IdxArray a;
  int64_t total = 1;
  for (int d = 0; d < ndim; ++d) {
    unsigned char b[4];
    in.read(b, 4, "the dimension sizes");
    const int64_t v = (int64_t(b[0]) << 24) | (int64_t(b[1]) << 16) | (int64_t(b[2]) << 8) | int64_t(b[3]);
    if (v <= 0 || v > (int64_t(1) << 31) - 1)
      throw DataError::at_byte(path, in.offset() - 4, "dimension " + std::to_string(d) + " has size " + std::to_string(v));
    a.dims.push_back(v);
    total *= v;
    if (total > (int64_t(1) << 36)) throw DataError::at_byte(path, in.offset() - 4, "implausibly large array");
  }
  a.data.resize(size_t(total));
  in.read(a.data.data(), total, "the data");
  if (!in.at_end())
    throw DataError::at_byte(path, in.offset(), "trailing bytes after the " + std::to_string(total) + " data bytes the header announces");
  return a;
}

Dataset read_idx_images(const std::string& images_path, const std::string& labels_path, const ImageOptions& opt) {
  if (opt.levels < 2 || opt.levels > 256) throw std::invalid_argument("image: levels must be in [2, 256], got " + std::to_string(opt.levels));
  const IdxArray images = read_idx(images_path);
  const IdxArray labels = read_idx(labels_path);
  if (images.dims.size() != 3)
    throw DataError(images_path, 0, "expected a 3-D array [count, height, width], got " + std::to_string(images.dims.size()) + " dimensions");
  if (labels.dims.size() != 1)
    throw DataError(labels_path, 0, "expected a 1-D array of labels, got " + std::to_string(labels.dims.size()) + " dimensions");
  if (labels.dims[0] != images.dims[0])
    throw DataError(labels_path, 0, "holds " + std::to_string(labels.dims[0]) + " labels but " + images_path + " holds " +
                                        std::to_string(images.dims[0]) + " images");
  Dataset d;
  d.task = "image";
  d.height = int32_t(images.dims[1]);
  d.width = int32_t(images.dims[2]);
  d.vocab_size = kFirstTaskToken + opt.levels;
  const int32_t max_label = *std::max_element(labels.data.begin(), labels.data.end());
  d.num_classes = opt.num_classes > 0 ? opt.num_classes : std::max(2, max_label + 1);
  if (max_label >= d.num_classes)
    throw DataError(labels_path, 0, "label " + std::to_string(max_label) + " outside [0, " + std::to_string(d.num_classes) + ")");
  const int64_t n = images.dims[0], hw = int64_t(d.height) * d.width;
  d.examples.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    Example& e = d.examples[size_t(i)];
    e.label = labels.data[size_t(i)];
    e.tokens.resize(size_t(hw));
    const uint8_t* px = images.data.data() + i * hw;
    for (int64_t j = 0; j < hw; ++j) e.tokens[size_t(j)] = kFirstTaskToken + int32_t(px[j]) * opt.levels / 256;
  }
  return d;
}

Splits load_idx_folder(const std::string& dir, int64_t n_val, const ImageOptions& opt) {
  auto find = [&](const std::string& stem) {
    for (const std::string& p : {dir + "/" + stem + ".gz", dir + "/" + stem}) {
      struct stat st;
      if (stat(p.c_str(), &st) == 0) return p;
    }
    throw DataError(dir + "/" + stem, 0, "not found (nor with .gz); on Debian, apt-get install dataset-fashion-mnist");
  };
  ImageOptions o = opt;
  if (o.num_classes == 0) o.num_classes = 10;
  Dataset train = read_idx_images(find("train-images-idx3-ubyte"), find("train-labels-idx1-ubyte"), o);
  Dataset test = read_idx_images(find("t10k-images-idx3-ubyte"), find("t10k-labels-idx1-ubyte"), o);
  if (n_val < 0 || n_val >= int64_t(train.size()))
    throw std::invalid_argument("image: n_val must be in [0, " + std::to_string(train.size()) + "), got " + std::to_string(n_val));
  Dataset val = empty_like(train);
  val.examples.assign(train.examples.end() - n_val, train.examples.end());
  train.examples.resize(train.size() - size_t(n_val));
  return Splits{std::move(train), std::move(val), std::move(test)};
}

}  // namespace longattn::data
