#include "apps/data/text.h"

#include <algorithm>
#include <charconv>
#include <fstream>

#include "apps/data/errors.h"
#include "apps/data/json.h"

namespace longattn::data {
namespace {

// Reads a file line by line with the 1-based line number; a final line without '\n' counts, a
// trailing '\r' is dropped.
template <class F>
void for_each_line(const std::string& path, F&& f) {
  std::ifstream is(path, std::ios::binary);
  if (!is) throw DataError(path, 0, "cannot open for reading");
  std::string line;
  int64_t n = 0;
  while (std::getline(is, line)) {
    ++n;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) throw DataError(path, n, "empty line");
    f(line, n);
  }
  if (is.bad()) throw DataError(path, n + 1, "read error");
  if (n == 0) throw DataError(path, 0, "empty file");
}

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t tab = line.find('\t', start);
    out.push_back(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
    if (tab == std::string::npos) return out;
    start = tab + 1;
  }
}

int32_t parse_label(const std::string& s, const std::string& path, int64_t line) {
  int64_t v = -1;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || s[0] == '-' || s[0] == '+' || r.ec != std::errc() || r.ptr != s.data() + s.size() || v > 1'000'000)
    throw DataError(path, line, "label '" + s + "' is not a non-negative integer");
  return int32_t(v);
}

class Builder {
 public:
  Builder(const std::string& path, const std::string& task, bool paired, const TextOptions& opt, TextStats* stats)
      : path_(path), opt_(opt), stats_(stats) {
    if (opt.max_length < 0) throw std::invalid_argument("text: max_length must be >= 0");
    d_.task = task;
    d_.vocab_size = kByteVocabSize;
    d_.paired = paired;
  }

  std::vector<int32_t> document(const std::string& text, int64_t line, const char* which) {
    if (text.empty()) throw DataError(path_, line, std::string("empty ") + which);
    std::vector<int32_t> t = byte_tokens(text);
    if (opt_.max_length > 0 && int64_t(t.size()) > opt_.max_length) {
      t.resize(size_t(opt_.max_length));
      if (stats_) ++stats_->truncated;
    }
    return t;
  }

  void add(Example e) { d_.examples.push_back(std::move(e)); }

  Dataset finish() {
    int32_t max_label = 0;
    for (const auto& e : d_.examples) max_label = std::max(max_label, e.label);
    d_.num_classes = opt_.num_classes > 0 ? opt_.num_classes : std::max(2, max_label + 1);
    if (max_label >= d_.num_classes)
      throw DataError(path_, 0, "label " + std::to_string(max_label) + " outside [0, " + std::to_string(d_.num_classes) + ")");
    return std::move(d_);
  }

 private:
  std::string path_;
  TextOptions opt_;
  TextStats* stats_;
  Dataset d_;
};

}  // namespace

std::vector<int32_t> byte_tokens(const std::string& text) {
  std::vector<int32_t> t(text.size());
  for (size_t i = 0; i < text.size(); ++i) t[i] = kFirstTaskToken + int32_t(static_cast<unsigned char>(text[i]));
  return t;
}

Dataset read_text_tsv(const std::string& path, const TextOptions& opt, TextStats* stats) {
  Builder b(path, "text", false, opt, stats);
  for_each_line(path, [&](const std::string& line, int64_t n) {
    auto f = split_tabs(line);
    if (f.size() != 2)
      throw DataError(path, n, "expected 2 tab-separated fields (label, text), got " + std::to_string(f.size()));
    Example e;
    e.label = parse_label(f[0], path, n);
    e.tokens = b.document(f[1], n, "text");
    b.add(std::move(e));
  });
  return b.finish();
}

Dataset read_text_jsonl(const std::string& path, const TextOptions& opt, TextStats* stats) {
  Builder b(path, "text", false, opt, stats);
  for_each_line(path, [&](const std::string& line, int64_t n) {
    std::map<std::string, JsonValue> obj;
    try {
      obj = parse_json_object(line);
    } catch (const JsonError& err) {
      throw DataError(path, n, std::string("invalid JSON: ") + err.what());
    }
    auto label = obj.find("label");
    auto text = obj.find("text");
    if (label == obj.end()) throw DataError(path, n, "the object has no \"label\" member");
    if (text == obj.end()) throw DataError(path, n, "the object has no \"text\" member");
    if (label->second.kind != JsonValue::Integer || label->second.integer < 0 || label->second.integer > 1'000'000)
      throw DataError(path, n, std::string("\"label\" must be a non-negative integer, got ") +
                                   (label->second.kind == JsonValue::Integer ? "a negative or huge integer"
                                                                             : json_kind_name(label->second.kind)));
    if (text->second.kind != JsonValue::String)
      throw DataError(path, n, std::string("\"text\" must be a string, got ") + json_kind_name(text->second.kind));
    Example e;
    e.label = int32_t(label->second.integer);
    e.tokens = b.document(text->second.str, n, "text");
    b.add(std::move(e));
  });
  return b.finish();
}

Dataset read_text_file(const std::string& path, const TextOptions& opt, TextStats* stats) {
  auto ends_with = [&](const std::string& suffix) {
    return path.size() >= suffix.size() && path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with(".jsonl") || ends_with(".json") ? read_text_jsonl(path, opt, stats) : read_text_tsv(path, opt, stats);
}

Dataset read_retrieval_tsv(const std::string& path, const TextOptions& opt, TextStats* stats) {
  Builder b(path, "retrieval", true, opt, stats);
  size_t columns = 0;  // fixed by the first line: 3, or 5 for LRA's AAN files
  for_each_line(path, [&](const std::string& line, int64_t n) {
    auto f = split_tabs(line);
    if (columns == 0) {
      if (f.size() != 3 && f.size() != 5)
        throw DataError(path, n, "expected 3 tab-separated fields (label, text1, text2) or 5 (label, id1, id2, text1, text2), got " +
                                     std::to_string(f.size()));
      columns = f.size();
    } else if (f.size() != columns) {
      throw DataError(path, n, "expected " + std::to_string(columns) + " tab-separated fields like the first line, got " +
                                   std::to_string(f.size()));
    }
    Example e;
    e.label = parse_label(f[0], path, n);
    e.tokens = b.document(f[columns - 2], n, "first document");
    e.tokens2 = b.document(f[columns - 1], n, "second document");
    b.add(std::move(e));
  });
  return b.finish();
}

}  // namespace longattn::data
