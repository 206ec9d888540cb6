// Tasks by name: what `longattn data` writes and `longattn train --task` trains on.
//
//   listops     LRA ListOps (generated; n_train n_val n_test min_length max_length max_depth max_args seed)
//   pathfinder  Pathfinder 32x32 (generated; size distractors levels n_train n_val n_test seed)
//   pathx       Pathfinder 128x128 (same options)
//   image       IDX images, Fashion-MNIST by default (dir n_val levels)
//   text        byte-level text classification (train val test: TSV or JSONL files; max_length)
//   retrieval   byte-level document pairs (train val test: TSV files; max_length)
//   files       dataset files written by `longattn data` (dir: holds train.tsv val.tsv test.tsv)
//   detect      a trivially learnable toy: random noise tokens with one marker token whose kind is
//               the label (length classes noise n_train n_val n_test seed); any attention learns it
#pragma once

#include <string>

#include "apps/data/dataset.h"
#include "apps/data/options.h"

namespace longattn::data {

// Builds the three splits; unknown task names and unknown options throw std::invalid_argument
// listing the known ones. All splits share vocab_size and num_classes.
Splits load_task(const std::string& name, Options& opt);

const char* task_names();  // "listops, pathfinder, ..."

// Writes dir/train.tsv, dir/val.tsv, dir/test.tsv (dataset files, docs/data.md); creates dir.
void write_splits(const Splits& s, const std::string& dir);

}  // namespace longattn::data
