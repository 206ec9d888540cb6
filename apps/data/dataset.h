// The in-memory dataset every task produces, batching with padding and masks, and the on-disk format.
//
// Token ids 0, 1 and 2 are reserved in every task: 0 = padding, 1 = CLS (prepended by the batcher
// when the model pools on it), 2 = SEP. Task tokens start at kFirstTaskToken = 3, so a byte b is
// token b + 3 and a pixel intensity p is token p + 3.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace longattn::data {

constexpr int32_t kPadToken = 0;
constexpr int32_t kClsToken = 1;
constexpr int32_t kSepToken = 2;
constexpr int32_t kFirstTaskToken = 3;
// Largest header values a dataset file may declare (dataset files, docs/data.md): 2^24 tokens, 2^20
// classes, 2^15 pixels a side.
constexpr int64_t kMaxVocabSize = int64_t(1) << 24;
constexpr int64_t kMaxClasses = int64_t(1) << 20;
constexpr int64_t kMaxSide = int64_t(1) << 15;

struct Example {
  std::vector<int32_t> tokens;
  std::vector<int32_t> tokens2;  // the second document of a retrieval pair; empty otherwise
  int32_t label = 0;
};

struct Dataset {
  std::string task;         // "listops", "pathfinder", "image", "text", "retrieval", ...
  int32_t vocab_size = 0;   // every token id is in [0, vocab_size)
  int32_t num_classes = 0;  // every label is in [0, num_classes)
  int32_t height = 0;       // images: the 2-D shape of the token sequence (height * width tokens); 0 otherwise
  int32_t width = 0;
  bool paired = false;      // retrieval: every example has tokens2
  std::vector<Example> examples;

  size_t size() const { return examples.size(); }
  int64_t max_length() const;  // longest tokens (or tokens2) sequence
  int64_t total_tokens() const;
};

// The same task, vocabulary, classes and shape, with no examples.
Dataset empty_like(const Dataset& d);

struct Splits {
  Dataset train, val, test;
};

// Checks the invariants above; throws std::invalid_argument naming the first example that breaks one.
void validate(const Dataset& ds);

struct BatchOptions {
  bool prepend_cls = false;  // put kClsToken at position 0 of every sequence
  int64_t fixed_length = 0;  // pad every sequence to this length (0: to the longest in the batch)
};

// Row-major [batch, length] arrays. mask is 1 where a real token sits (True = takes part, as the
// key_padding_mask of the operators), 0 on padding.
struct Batch {
  int64_t batch = 0;
  int64_t length = 0;
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;
  int64_t length2 = 0;  // the second documents of retrieval pairs (paired datasets only)
  std::vector<int32_t> tokens2;
  std::vector<uint8_t> mask2;
  std::vector<int32_t> labels;
  int64_t real_tokens = 0;  // non-padding tokens in the batch (both documents), for tokens/s
};

// Gathers ds.examples[indices[i]] into a padded batch. Throws std::invalid_argument when a sequence
// (with its CLS) is longer than a fixed_length, rather than cutting it.
Batch make_batch(const Dataset& ds, const std::vector<size_t>& indices, const BatchOptions& opt = {});

// The on-disk format, one file per split (see docs/data.md):
//   #longattn-dataset v1 task=listops vocab_size=20 num_classes=10 height=0 width=0 paired=0 count=2
//   7<TAB>15 3 4 16
//   2<TAB>13 9 12 16
// i.e. a header line, then one example per line: the label, a tab, the token ids separated by
// single spaces, and for paired datasets a second tab and the second document's ids.
// write_dataset writes a temporary file beside `path` and renames it, so a reader never sees half a file.
void write_dataset(const Dataset& ds, const std::string& path);
// Throws DataError (file, line, reason) on anything malformed, including ids or labels out of range
// and a count that disagrees with the header.
Dataset read_dataset(const std::string& path);

}  // namespace longattn::data
