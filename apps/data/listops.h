// ListOps (Nangia & Bowman 2018) with the rules of the Long Range Arena generator
// (lra_benchmarks/data/listops.py; see docs/data.md):
//  - operators MIN, MAX, MED (median, truncated to an integer), SM (sum modulo 10) over the digits 0-9;
//  - a node at depth d < max_depth is an operator with probability 0.25 (otherwise a digit), depth
//    max_depth forces digits, the root is at depth 1; an operator has randint(2, max_args) arguments;
//  - an expression is kept only if min_length < tokens < max_length (strict, as LRA), and only once
//    (de-duplicated); the first n_train unique ones form the training split, then validation, then test.
// Tokens follow LRA's input pipeline: "[MIN", "[MAX", "[MED", "[SM", "]" and the digits, no parentheses.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "apps/data/dataset.h"

namespace longattn::data {

// The fixed ListOps vocabulary (after the three reserved ids).
namespace listops {
constexpr int32_t kDigit0 = kFirstTaskToken;  // digit v is kDigit0 + v
constexpr int32_t kMin = kDigit0 + 10;
constexpr int32_t kMax = kMin + 1;
constexpr int32_t kMed = kMin + 2;
constexpr int32_t kSumMod = kMin + 3;
constexpr int32_t kClose = kMin + 4;
constexpr int32_t kVocabSize = kClose + 1;
constexpr int32_t kNumClasses = 10;
}  // namespace listops

struct ListOpsOptions {
  int64_t n_train = 96000, n_val = 2000, n_test = 2000;  // LRA's defaults
  int max_depth = 10;
  int max_args = 10;
  int64_t min_length = 500;   // exclusive
  int64_t max_length = 2000;  // exclusive
  uint64_t seed = 0;
  // Give up (std::runtime_error) after this many draws in a row without a new unique expression:
  // a window too narrow to hold enough distinct expressions must not loop forever.
  int64_t max_stale_draws = 10'000'000;
};

// Same options, same seed: the same splits, bit for bit.
Splits generate_listops(const ListOpsOptions& opt);

// "[MAX 4 3 [MIN 2 3 ] 1 0 ]" <-> token ids. from_string accepts LRA's raw TSV text too: it drops
// parentheses and splits on whitespace; an unknown word throws std::invalid_argument naming it.
std::string listops_to_string(const std::vector<int32_t>& tokens);
std::vector<int32_t> listops_from_string(const std::string& text);

// Reads LRA's released TSV files (header "Source<TAB>Target", then expression<TAB>label).
// Malformed lines throw DataError with the file, the line and the reason.
Dataset read_listops_tsv(const std::string& path);

}  // namespace longattn::data
