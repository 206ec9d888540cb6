#include "apps/train/commands.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <map>
#include <stdexcept>
#include <limits>
#include <string>
#include <vector>

#include <thread>

#include "apps/data/tasks.h"
#include "apps/flags.h"
#include "apps/train/distributed.h"
#include "apps/train/progress.h"
#include "apps/train/trainer.h"

namespace longattn::train {
namespace {

using app::Flags;
using app::UsageError;

// Flags every command that reads a task shares.
const std::map<std::string, std::string> kTaskFlags = {
    {"task", "task name, required; one of: " + std::string(data::task_names())},
    {"task-options", "the task's key=value options, comma-separated (default: none; docs/data.md lists them)"},
};

std::map<std::string, std::string> with_task_flags(std::map<std::string, std::string> m) {
  m.insert(kTaskFlags.begin(), kTaskFlags.end());
  return m;
}

// --eval-limit N keeps the first N validation and test examples (quicker evaluation; the
// summary then reports accuracy on those N).
data::Splits task_from(const Flags& f) {
  const std::string task = f.require("task", std::string("the task; known tasks: ") + data::task_names());
  data::Options o = data::Options::parse(f.get("task-options", ""));
  const int64_t limit = f.has("eval-limit") ? f.get_int("eval-limit", 0, 0) : 0;
  data::Splits s = data::load_task(task, o);
  for (data::Dataset* d : {&s.val, &s.test})
    if (limit > 0 && d->examples.size() > size_t(limit)) d->examples.resize(size_t(limit));
  return s;
}

bool print_help(const app::Args& args, const char* usage, const Flags& f) {
  if (!app::wants_help(args)) return false;
  std::printf("%s\n%s", usage, f.help().c_str());
  return true;
}

// The upper bounds keep a typo from asking for terabytes (a dim of 1e9 would); they are far above
// anything the tool trains on one machine.
constexpr int64_t kMaxWidth = 1 << 16;    // dim, ffn
constexpr int64_t kMaxThreads = 1 << 10;

}  // namespace

int data_command(const app::Args& args) {
  Flags f("data", with_task_flags({{"out", "output folder, required (train.tsv, val.tsv, test.tsv go there)"}}));
  if (print_help(args, "usage: longattn data --task NAME [--task-options K=V,...] --out FOLDER", f)) return 0;
  f.parse(args);
  const std::string out = f.require("out", "the folder train.tsv, val.tsv, test.tsv go to");
  const data::Splits s = task_from(f);
  data::write_splits(s, out);
  std::printf("wrote %s/{train,val,test}.tsv: %zu / %zu / %zu examples, vocab %d, %d classes, longest %lld tokens\n",
              out.c_str(), s.train.size(), s.val.size(), s.test.size(), s.train.vocab_size, s.train.num_classes,
              (long long)std::max({s.train.max_length(), s.val.max_length(), s.test.max_length()}));
  return 0;
}

int train_command(const app::Args& args) {
  Flags f("train",
          with_task_flags({
              {"attention", "attention mechanism (default softmax); one of: " + nn::attention_names()},
              {"fastrpb", "FastRPB relative position bias: none, 1d or 2d (2d: image tasks only) (default none)"},
              {"layers", "encoder blocks, >= 1 (default 2)"},
              {"dim", "model width, >= 1 and a multiple of --heads (default 64)"},
              {"heads", "attention heads, >= 1 (default 2)"},
              {"ffn", "feed-forward width, >= 1 (default 128)"},
              {"dropout", "dropout probability in [0, 1) (default 0.1)"},
              {"positions", "learned or none (default learned)"},
              {"pooling", "mean or cls (default mean)"},
              {"embed-std", "token embedding init std, a finite number > 0; PyTorch-LRA: 0.02 (default 1, torch's)"},
              {"steps", "optimiser steps, >= 1 (default 1000)"},
              {"batch", "examples per step, >= 1 (default 32)"},
              {"bucket", "batches per length-sorted pool, >= 1; 1: no bucketing (default 1)"},
              {"lr", "peak learning rate, a finite number > 0 (default 0.001)"},
              {"warmup", "linear warm-up steps, >= 0 (default 100)"},
              {"weight-decay", "AdamW weight decay, a finite number >= 0 (default 0.01)"},
              {"clip", "max global gradient norm, a finite number >= 0; 0: off (default 1)"},
              {"eval-every", "evaluate and checkpoint every N steps, >= 0; 0: only at the end (default 200)"},
              {"log-every", "progress line every N steps when not on a terminal, >= 1 (default 20)"},
              {"threads", "intra-op threads, >= 0; 0: torch's default (default 0)"},
              {"device", "cpu (the fused kernels) or a device torch sees: cuda, cuda:N, xpu, mps (the reference path) (default cpu)"},
              {"seed", "random seed in [0, 2^64 - 1] (default 0)"},
              {"out", "folder for checkpoints and metrics.jsonl (default: none, keeps nothing)"},
              {"stop-after", "stop (checkpointing) after this step as if interrupted, >= -1; -1: never (default -1)"},
              {"eval-limit", "evaluate on the first N validation/test examples, >= 0; 0: all (default 0)"},
              {"resume", "continue from --out's latest.ckpt"},
              {"quiet", "no progress output"},
              {"nproc", "data parallel: launch N local ranks of this command, >= 1, --threads divided among them (default 1)"},
              {"dist-timeout", "seconds a collective may wait for a peer before the run ends naming it, >= 1 (default 300)"},
          }),
          {"resume", "quiet"});
  if (print_help(args, "usage: longattn train --task NAME [flags]", f)) return 0;
  f.parse(args);
  // Data parallel: --nproc N launches N local ranks of this command; RANK/WORLD_SIZE (torchrun)
  // make this process one rank.
  const int64_t nproc = f.get_int("nproc", 1, 1, 1024), dist_timeout = f.get_int("dist-timeout", 300, 1);
  if (nproc > 1) {
    if (std::getenv("RANK") || std::getenv("WORLD_SIZE"))
      throw UsageError("flag --nproc launches a group of its own; this process is already rank " +
                       std::string(std::getenv("RANK") ? std::getenv("RANK") : "?") + " of one (RANK/WORLD_SIZE set)");
    // The ranks get every argument but --nproc and --threads; the threads are divided among them.
    const int64_t total = f.get_int("threads", 0, 0, kMaxThreads) > 0
                              ? f.get_int("threads", 0, 0, kMaxThreads)
                              : int64_t(std::max(1u, std::thread::hardware_concurrency()));
    std::vector<std::string> rest;
    for (size_t i = 0; i < args.size(); ++i) {
      const std::string& a = args[i];
      if (a == "--nproc" || a == "--threads") ++i;
      else if (a.rfind("--nproc=", 0) != 0 && a.rfind("--threads=", 0) != 0) rest.push_back(a);
    }
    return launch_local(int(nproc), int(std::max<int64_t>(1, total / nproc)), rest, std::chrono::seconds(dist_timeout));
  }
  TrainConfig c;
  {
    std::vector<std::string> names;
    std::string all = nn::attention_names();
    for (size_t pos = 0; pos <= all.size();) {
      size_t comma = all.find(", ", pos);
      names.push_back(all.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
      if (comma == std::string::npos) break;
      pos = comma + 2;
    }
    c.model.attention = f.get_choice("attention", "softmax", names);
  }
  c.model.fastrpb = f.get_choice("fastrpb", "none", {"none", "1d", "2d"});
  c.model.layers = f.get_int("layers", 2, 1, 1024);
  c.model.heads = f.get_int("heads", 2, 1, kMaxWidth);
  c.model.dim = f.get_int("dim", 64, 1, kMaxWidth);
  if (c.model.dim % c.model.heads != 0)
    throw UsageError("flag --dim got '" + std::to_string(c.model.dim) + "'; allowed: a multiple of --heads (" +
                     std::to_string(c.model.heads) + ")");
  c.model.ffn = f.get_int("ffn", 128, 1, kMaxWidth);
  c.model.dropout = f.get_double("dropout", 0.1, 0.0, 1.0, false, true);
  c.model.positions = f.get_choice("positions", "learned", {"learned", "none"});
  c.model.pooling = f.get_choice("pooling", "mean", {"mean", "cls"});
  c.model.embed_std = f.get_double("embed-std", 1.0, 0.0, std::numeric_limits<double>::max(), true);
  c.steps = f.get_int("steps", 1000, 1);
  c.batch = f.get_int("batch", 32, 1, 1 << 20);
  c.bucket = f.get_int("bucket", 1, 1, 1 << 20);
  c.lr = f.get_double("lr", 1e-3, 0.0, std::numeric_limits<double>::max(), true);
  c.warmup = f.get_int("warmup", 100, 0);
  c.weight_decay = f.get_double("weight-decay", 0.01, 0.0);
  c.clip = f.get_double("clip", 1.0, 0.0);
  c.eval_every = f.get_int("eval-every", 200, 0);
  c.log_every = f.get_int("log-every", 20, 1);
  c.threads = int(f.get_int("threads", 0, 0, kMaxThreads));
  c.device = f.get("device", "cpu");
  try {
    training_device(c.device);
  } catch (const std::invalid_argument& e) {
    throw UsageError(e.what());
  }
  c.seed = f.get_uint64("seed", 0);
  c.model.seed = c.seed;
  c.out_dir = f.get("out", "");
  c.resume = f.has("resume");
  if (c.resume && c.out_dir.empty()) throw UsageError("flag --resume needs --out FOLDER (the interrupted run's)");
  c.quiet = f.has("quiet");
  c.stop_after = f.get_int("stop-after", -1, -1);
  c.dist = Distributed::from_environment(std::chrono::seconds(dist_timeout));
  const data::Splits s = task_from(f);
  if (c.model.fastrpb == "2d" && (s.train.height <= 0 || s.train.width <= 0))
    throw UsageError("flag --fastrpb got '2d', but task '" + f.get("task", "") +
                     "' is not an image (no height and width); allowed here: none, 1d");
  const TrainResult r = train(c, s);
  if (c.dist && c.dist->rank() != 0) return 0;  // rank 0 reports
  if (r.steps_done < c.steps) {
    std::printf("stopped at step %lld of %lld; continue with --resume\n", (long long)r.steps_done, (long long)c.steps);
    return 0;
  }
  std::printf("attention %s%s: test accuracy %.4f (loss %.4f), val accuracy %.4f (best %.4f), %lld parameters, "
              "wall %s, %.0f tokens/s, peak memory %.0f MiB, %s%d threads%s\n",
              c.model.attention.c_str(), c.model.fastrpb == "none" ? "" : (" + FastRPB " + c.model.fastrpb).c_str(),
              r.test.accuracy, r.test.loss, r.val.accuracy, r.best_val_accuracy, (long long)r.parameters,
              format_duration(r.wall_seconds).c_str(), r.tokens_per_second, r.peak_memory_mib,
              r.world > 1 ? (std::to_string(r.world) + " processes x ").c_str() : "", r.threads,
              r.world > 1 ? (", communication " +
                             std::to_string(int(std::lround(100 * r.comm_seconds / std::max(r.train_seconds, 1e-9)))) +
                             "% of step time").c_str()
                          : "");
  return 0;
}

int eval_command(const app::Args& args) {
  Flags f("eval", with_task_flags({
                      {"checkpoint", "checkpoint file written by train, required"},
                      {"batch", "examples per forward pass, >= 1 (default 64)"},
                      {"threads", "intra-op threads, >= 0; 0: torch's default (default 0)"},
                      {"eval-limit", "evaluate on the first N test examples, >= 0; 0: all (default 0)"},
                  }));
  if (print_help(args, "usage: longattn eval --checkpoint FILE --task NAME [flags]", f)) return 0;
  f.parse(args);
  const std::string ckpt = f.require("checkpoint", "a checkpoint file written by `longattn train`");
  const int64_t batch = f.get_int("batch", 64, 1, 1 << 20);
  const int threads = int(f.get_int("threads", 0, 0, kMaxThreads));
  f.get_int("eval-limit", 0, 0);
  if (threads > 0) torch::set_num_threads(threads);
  nn::Classifier model = load_model(ckpt);
  const data::Splits s = task_from(f);
  const auto& m = model->config();
  if (s.test.vocab_size > m.vocab_size || s.test.num_classes != m.num_classes)
    throw std::invalid_argument("the task's vocabulary (" + std::to_string(s.test.vocab_size) + ") or classes (" +
                                std::to_string(s.test.num_classes) + ") do not match the checkpoint's model (" +
                                std::to_string(m.vocab_size) + ", " + std::to_string(m.num_classes) + ")");
  const EvalResult r = evaluate(model, s.test, batch);
  std::printf("test accuracy %.4f, loss %.4f, %lld examples (peak memory %.0f MiB, %d threads)\n", r.accuracy,
              r.loss, (long long)r.examples, peak_memory_mib(), torch::get_num_threads());
  return 0;
}

}  // namespace longattn::train
