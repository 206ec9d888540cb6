#include "apps/data/dataset.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

#include "apps/data/errors.h"

namespace longattn::data {

int64_t Dataset::max_length() const {
  int64_t m = 0;
  for (const auto& e : examples)
    m = std::max<int64_t>(m, std::max(e.tokens.size(), e.tokens2.size()));
  return m;
}

int64_t Dataset::total_tokens() const {
  int64_t n = 0;
  for (const auto& e : examples) n += int64_t(e.tokens.size() + e.tokens2.size());
  return n;
}

Dataset empty_like(const Dataset& d) {
  Dataset e;
  e.task = d.task;
  e.vocab_size = d.vocab_size;
  e.num_classes = d.num_classes;
  e.height = d.height;
  e.width = d.width;
  e.paired = d.paired;
  return e;
}

void validate(const Dataset& ds) {
  auto fail = [&](size_t i, const std::string& why) {
    throw std::invalid_argument("dataset '" + ds.task + "', example " + std::to_string(i) + ": " + why);
  };
  if (ds.vocab_size <= kFirstTaskToken) throw std::invalid_argument("dataset '" + ds.task + "': vocab_size must exceed 3");
  if (ds.num_classes < 2) throw std::invalid_argument("dataset '" + ds.task + "': num_classes must be at least 2");
  if ((ds.height > 0) != (ds.width > 0))
    throw std::invalid_argument("dataset '" + ds.task + "': height and width must both be set or both be 0");
  for (size_t i = 0; i < ds.examples.size(); ++i) {
    const Example& e = ds.examples[i];
    if (e.label < 0 || e.label >= ds.num_classes)
      fail(i, "label " + std::to_string(e.label) + " outside [0, " + std::to_string(ds.num_classes) + ")");
    if (e.tokens.empty()) fail(i, "empty sequence");
    if (ds.paired == e.tokens2.empty()) fail(i, ds.paired ? "paired dataset but no second document" : "unexpected second document");
    for (const auto* seq : {&e.tokens, &e.tokens2})
      for (int32_t t : *seq)
        if (t < 0 || t >= ds.vocab_size)
          fail(i, "token " + std::to_string(t) + " outside [0, " + std::to_string(ds.vocab_size) + ")");
    if (ds.height > 0 && int64_t(e.tokens.size()) != int64_t(ds.height) * ds.width)
      fail(i, "image of " + std::to_string(e.tokens.size()) + " tokens, expected " + std::to_string(ds.height) + "x" +
                  std::to_string(ds.width));
  }
}

namespace {

void fill_rows(const std::vector<const std::vector<int32_t>*>& seqs, bool cls, int64_t fixed, int64_t& length,
               std::vector<int32_t>& tokens, std::vector<uint8_t>& mask, int64_t& real) {
  const int64_t extra = cls ? 1 : 0;
  int64_t longest = 0;
  for (const auto* s : seqs) longest = std::max<int64_t>(longest, int64_t(s->size()) + extra);
  if (fixed > 0 && longest > fixed)
    throw std::invalid_argument("make_batch: a sequence of " + std::to_string(longest) +
                                " tokens (CLS included) is longer than the fixed length " + std::to_string(fixed));
  length = fixed > 0 ? fixed : longest;
  tokens.assign(seqs.size() * length, kPadToken);
  mask.assign(seqs.size() * length, 0);
  for (size_t b = 0; b < seqs.size(); ++b) {
    int32_t* row = tokens.data() + b * length;
    uint8_t* m = mask.data() + b * length;
    if (cls) row[0] = kClsToken;
    std::copy(seqs[b]->begin(), seqs[b]->end(), row + extra);
    const int64_t n = int64_t(seqs[b]->size()) + extra;
    std::fill(m, m + n, uint8_t(1));
    real += n;
  }
}

}  // namespace

Batch make_batch(const Dataset& ds, const std::vector<size_t>& indices, const BatchOptions& opt) {
  Batch b;
  b.batch = int64_t(indices.size());
  std::vector<const std::vector<int32_t>*> first, second;
  for (size_t i : indices) {
    if (i >= ds.examples.size())
      throw std::out_of_range("make_batch: index " + std::to_string(i) + " but the dataset has " +
                              std::to_string(ds.examples.size()) + " examples");
    first.push_back(&ds.examples[i].tokens);
    second.push_back(&ds.examples[i].tokens2);
    b.labels.push_back(ds.examples[i].label);
  }
  fill_rows(first, opt.prepend_cls, opt.fixed_length, b.length, b.tokens, b.mask, b.real_tokens);
  if (ds.paired) fill_rows(second, opt.prepend_cls, opt.fixed_length, b.length2, b.tokens2, b.mask2, b.real_tokens);
  return b;
}

// ---------------------------------------------------------------- on-disk format

namespace {

constexpr const char* kMagic = "#longattn-dataset v1";

void write_ids(std::ostream& os, const std::vector<int32_t>& ids) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) os << ' ';
    os << ids[i];
  }
}

// Parses a non-negative decimal integer that fills [b, e) exactly.
bool parse_int(const char* b, const char* e, int64_t& out) {
  if (b == e || *b == '+' || *b == '-') return false;
  auto r = std::from_chars(b, e, out);
  return r.ec == std::errc() && r.ptr == e;
}

std::vector<int32_t> parse_ids(const std::string& field, const std::string& path, int64_t line, int32_t vocab) {
  std::vector<int32_t> ids;
  const char* p = field.data();
  const char* end = p + field.size();
  if (p == end) throw DataError(path, line, "empty token sequence");
  while (p < end) {
    const char* q = std::find(p, end, ' ');
    int64_t v;
    if (!parse_int(p, q, v))
      throw DataError(path, line, "token id '" + std::string(p, q) + "' is not a non-negative integer (ids are separated by single spaces)");
    if (v >= vocab)
      throw DataError(path, line, "token id " + std::to_string(v) + " outside [0, " + std::to_string(vocab) + ")");
    ids.push_back(int32_t(v));
    p = q == end ? end : q + 1;
    if (q != end && p == end) throw DataError(path, line, "trailing space after the last token id");
  }
  return ids;
}

}  // namespace

void write_dataset(const Dataset& ds, const std::string& path) {
  validate(ds);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream os(tmp, std::ios::binary | std::ios::trunc);
    if (!os) throw DataError(tmp, 0, "cannot open for writing");
    os << kMagic << " task=" << ds.task << " vocab_size=" << ds.vocab_size << " num_classes=" << ds.num_classes
       << " height=" << ds.height << " width=" << ds.width << " paired=" << (ds.paired ? 1 : 0)
       << " count=" << ds.examples.size() << '\n';
    for (const Example& e : ds.examples) {
      os << e.label << '\t';
      write_ids(os, e.tokens);
      if (ds.paired) {
        os << '\t';
        write_ids(os, e.tokens2);
      }
      os << '\n';
    }
    os.flush();
    if (!os) throw DataError(tmp, 0, "write failed (disk full?)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw DataError(path, 0, "cannot rename " + tmp + " to it");
}

Dataset read_dataset(const std::string& path) {
  std::ifstream is(path, std::ios::binary);
  if (!is) throw DataError(path, 0, "cannot open for reading");
  std::string line;
  if (!std::getline(is, line)) throw DataError(path, 1, "empty file, expected the header '" + std::string(kMagic) + " ...'");
  if (line.rfind(kMagic, 0) != 0)
    throw DataError(path, 1, "not a longattn dataset file: the first line must start with '" + std::string(kMagic) + "'");
  std::map<std::string, std::string> kv;
  {
    std::istringstream hs(line.substr(std::string(kMagic).size()));
    std::string item;
    while (hs >> item) {
      auto eq = item.find('=');
      if (eq == std::string::npos || eq == 0) throw DataError(path, 1, "header item '" + item + "' is not key=value");
      kv[item.substr(0, eq)] = item.substr(eq + 1);
    }
  }
  auto header_int = [&](const char* key) {
    auto it = kv.find(key);
    if (it == kv.end()) throw DataError(path, 1, std::string("header lacks ") + key + "=");
    int64_t v;
    if (!parse_int(it->second.data(), it->second.data() + it->second.size(), v))
      throw DataError(path, 1, std::string("header ") + key + "='" + it->second + "' is not a non-negative integer");
    return v;
  };
  Dataset ds;
  if (!kv.count("task")) throw DataError(path, 1, "header lacks task=");
  ds.task = kv["task"];
  // Bounds far above any real task that keep a corrupt header from sizing a model's embedding or
  // head beyond memory (the allocator's error would name no file).
  auto bounded = [&](const char* key, int64_t limit) {
    const int64_t v = header_int(key);
    if (v > limit)
      throw DataError(path, 1, std::string("header ") + key + "=" + std::to_string(v) + " exceeds the limit " +
                                   std::to_string(limit));
    return int32_t(v);
  };
  ds.vocab_size = bounded("vocab_size", kMaxVocabSize);
  ds.num_classes = bounded("num_classes", kMaxClasses);
  ds.height = bounded("height", kMaxSide);
  ds.width = bounded("width", kMaxSide);
  const int64_t paired = header_int("paired");
  if (paired > 1) throw DataError(path, 1, "header paired= must be 0 or 1");
  ds.paired = paired == 1;
  const int64_t count = header_int("count");

  int64_t lineno = 1;
  while (std::getline(is, line)) {
    ++lineno;
    std::vector<std::string> fields;
    size_t start = 0;
    for (;;) {
      size_t tab = line.find('\t', start);
      fields.push_back(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
      if (tab == std::string::npos) break;
      start = tab + 1;
    }
    const size_t want = ds.paired ? 3 : 2;
    if (fields.size() != want)
      throw DataError(path, lineno, "expected " + std::to_string(want) + " tab-separated fields (label, tokens" +
                                        (ds.paired ? ", tokens2" : "") + "), got " + std::to_string(fields.size()));
    int64_t label;
    if (!parse_int(fields[0].data(), fields[0].data() + fields[0].size(), label))
      throw DataError(path, lineno, "label '" + fields[0] + "' is not a non-negative integer");
    if (label >= ds.num_classes)
      throw DataError(path, lineno, "label " + std::to_string(label) + " outside [0, " + std::to_string(ds.num_classes) + ")");
    Example e;
    e.label = int32_t(label);
    e.tokens = parse_ids(fields[1], path, lineno, ds.vocab_size);
    if (ds.paired) e.tokens2 = parse_ids(fields[2], path, lineno, ds.vocab_size);
    if (ds.height > 0 && int64_t(e.tokens.size()) != int64_t(ds.height) * ds.width)
      throw DataError(path, lineno, "image of " + std::to_string(e.tokens.size()) + " tokens, the header says " +
                                        std::to_string(ds.height) + "x" + std::to_string(ds.width));
    ds.examples.push_back(std::move(e));
  }
  if (int64_t(ds.examples.size()) != count)
    throw DataError(path, lineno, "the header promises " + std::to_string(count) + " examples, the file holds " +
                                      std::to_string(ds.examples.size()) + " (truncated?)");
  try {
    validate(ds);
  } catch (const std::invalid_argument& e) {
    throw DataError(path, 1, e.what());
  }
  return ds;
}

}  // namespace longattn::data
