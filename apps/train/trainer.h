// `longattn train` / `longattn eval`: AdamW with linear warmup then linear decay, gradient clipping,
// dropout, padded batches with masks, evaluation every K steps, atomic checkpoints (latest and best),
// exact resume (same data order and random state), progress and metrics.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "apps/data/dataset.h"
#include "nn/encoder.h"

namespace longattn::train {

class Distributed;

struct TrainConfig {
  nn::ModelConfig model;   // vocab_size, num_classes, max_len, paired, height, width come from the data
  int64_t steps = 1000;
  int64_t batch = 32;
  int64_t bucket = 1;        // length bucketing: batches per length-sorted pool (data::EpochOrder); 1: off
  double lr = 1e-3;
  int64_t warmup = 100;
  double weight_decay = 0.01;
  double clip = 1.0;        // max global gradient norm (0: off)
  int64_t eval_every = 200;  // also checkpoints; 0: only at the end
  int64_t log_every = 20;    // plain progress lines when not on a terminal
  int64_t eval_batch = 64;
  int threads = 0;           // 0: torch's default (at::set_num_threads; the longattn kernels use the same count)
  uint64_t seed = 0;
  // Where the model and its batches live: "cpu" (the fused kernels) or a device torch sees ("cuda",
  // "cuda:1", "xpu", "mps"), where every longattn operator takes its reference path (ATen
  // operations; docs/reference_path.md). Checkpoints are written and read on the CPU either way.
  std::string device = "cpu";
  std::string out_dir;       // checkpoints (latest.ckpt, best.ckpt) and metrics.jsonl; "" keeps nothing
  bool resume = false;       // continue from out_dir/latest.ckpt
  int64_t stop_after = -1;   // stop (checkpointing) after this step, as if interrupted; -1: run to the end
  bool quiet = false;
  // Data parallel (distributed.h): this process is one rank; `batch` stays the global batch, of which
  // rank r takes rows [batch r / W, batch (r + 1) / W). nullptr: one process.
  std::shared_ptr<Distributed> dist;
  int64_t bucket_bytes = int64_t(25) << 20;  // gradient all-reduce bucket size
};

struct EvalResult {
  double loss = 0, accuracy = 0;
  int64_t examples = 0;
};

struct TrainResult {
  int64_t steps_done = 0;
  EvalResult val, test;
  double best_val_accuracy = 0;
  double wall_seconds = 0, tokens_per_second = 0, peak_memory_mib = 0;
  int64_t parameters = 0;
  int threads = 0;  // the intra-op thread count the run used
  double final_train_loss = 0;
  int world = 1;              // processes in the run
  double comm_seconds = 0;    // of the training steps: time in the gradient all-reduce and parameter check
  double train_seconds = 0;   // time in training steps (data, forward, backward, communication, update)
};

// The device `name` names, checked: one torch can use in this process; otherwise an
// std::invalid_argument that says what was asked and what is there.
torch::Device training_device(const std::string& name);

// Fills the data-dependent model fields from the splits.
void fit_model_to_data(nn::ModelConfig& m, const data::Splits& s);

TrainResult train(const TrainConfig& cfg, const data::Splits& splits);

// With dist, each rank evaluates every W-th batch (in length order) and the sums are all-reduced, so
// every rank returns the same result.
EvalResult evaluate(nn::Classifier& model, const data::Dataset& ds, int64_t batch, Distributed* dist = nullptr);

// Loads a checkpoint written by train(): the model, rebuilt from the configuration stored in it.
nn::Classifier load_model(const std::string& checkpoint_path);

}  // namespace longattn::train
