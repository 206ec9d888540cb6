// Byte-level text classification (LRA "Text") and document-pair retrieval (LRA "Retrieval") from a
// user's files. Every byte b of a document is token b + 3 (vocab 259); documents longer than
// max_length bytes are cut to their first max_length bytes, as LRA does.
//
// Accepted files (one example per line; a trailing '\r' is dropped so CRLF files read the same):
//  - text TSV:       label<TAB>text
//  - text JSONL:     {"label": 1, "text": "..."}  (other members allowed and ignored)
//  - retrieval TSV:  label<TAB>text1<TAB>text2, or LRA's AAN layout label<TAB>id1<TAB>id2<TAB>text1<TAB>text2
// Labels are non-negative integers. An empty line, a wrong field count, a bad label, an empty
// document or invalid JSON stops reading with DataError naming the file, the line and the reason.
#pragma once

#include <cstdint>
#include <string>

#include "apps/data/dataset.h"

namespace longattn::data {

constexpr int32_t kByteVocabSize = kFirstTaskToken + 256;

struct TextOptions {
  int64_t max_length = 4000;  // bytes kept per document; 0 keeps everything
  int32_t num_classes = 0;    // 0: the largest label + 1 (at least 2)
};

struct TextStats {
  int64_t truncated = 0;  // documents cut to max_length
};

Dataset read_text_tsv(const std::string& path, const TextOptions& opt = {}, TextStats* stats = nullptr);
Dataset read_text_jsonl(const std::string& path, const TextOptions& opt = {}, TextStats* stats = nullptr);
// Chooses by the name: *.jsonl or *.json reads JSONL, anything else TSV.
Dataset read_text_file(const std::string& path, const TextOptions& opt = {}, TextStats* stats = nullptr);
Dataset read_retrieval_tsv(const std::string& path, const TextOptions& opt = {}, TextStats* stats = nullptr);

// The byte tokens of a document (no truncation).
std::vector<int32_t> byte_tokens(const std::string& text);

}  // namespace longattn::data
