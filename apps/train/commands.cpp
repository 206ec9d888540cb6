#include "apps/train/commands.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <map>
#include <set>
#include <stdexcept>
#include <string>

#include <thread>

#include "apps/data/tasks.h"
#include "apps/train/distributed.h"
#include "apps/train/progress.h"
#include "apps/train/trainer.h"

namespace longattn::train {
namespace {

// "--key value" and "--flag" arguments; every option must be known to the command.
class Args {
 public:
  Args(int argc, char** argv, const std::set<std::string>& flags, const std::set<std::string>& valued) {
    for (int i = 0; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0) throw std::invalid_argument("unexpected argument '" + a + "'");
      a = a.substr(2);
      std::string value;
      const auto eq = a.find('=');
      if (eq != std::string::npos) value = a.substr(eq + 1), a = a.substr(0, eq);
      if (flags.count(a)) {
        values_[a] = "1";
      } else if (valued.count(a)) {
        if (eq == std::string::npos) {
          if (i + 1 >= argc) throw std::invalid_argument("--" + a + " needs a value");
          value = argv[++i];
        }
        values_[a] = value;
      } else {
        std::string known;
        for (const auto& k : valued) known += " --" + k;
        for (const auto& k : flags) known += " --" + k;
        throw std::invalid_argument("unknown option --" + a + "; known:" + known);
      }
    }
  }
  std::string get(const std::string& k, const std::string& d) const {
    auto it = values_.find(k);
    return it == values_.end() ? d : it->second;
  }
  int64_t get_int(const std::string& k, int64_t d) const {
    auto it = values_.find(k);
    if (it == values_.end()) return d;
    size_t pos = 0;
    const int64_t v = std::stoll(it->second, &pos);
    if (pos != it->second.size()) throw std::invalid_argument("--" + k + " " + it->second + ": not an integer");
    return v;
  }
  double get_double(const std::string& k, double d) const {
    auto it = values_.find(k);
    if (it == values_.end()) return d;
    size_t pos = 0;
    const double v = std::stod(it->second, &pos);
    if (pos != it->second.size()) throw std::invalid_argument("--" + k + " " + it->second + ": not a number");
    return v;
  }
  bool flag(const std::string& k) const { return values_.count(k) != 0; }

 private:
  std::map<std::string, std::string> values_;
};

// --eval-limit N keeps the first N validation and test examples (quicker evaluation; the
// summary then reports accuracy on those N).
data::Splits task_from(const Args& a) {
  const std::string task = a.get("task", "");
  if (task.empty()) throw std::invalid_argument(std::string("--task NAME is required; known tasks: ") + data::task_names());
  data::Options o = data::Options::parse(a.get("task-options", ""));
  data::Splits s = data::load_task(task, o);
  const int64_t limit = a.get_int("eval-limit", 0);
  if (limit < 0) throw std::invalid_argument("--eval-limit must be >= 0 (0: every example)");
  for (data::Dataset* d : {&s.val, &s.test})
    if (limit > 0 && d->examples.size() > size_t(limit)) d->examples.resize(size_t(limit));
  return s;
}

template <class F>
int guarded(const char* name, F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "longattn %s: error: %s\n", name, e.what());
    return 2;
  }
}

}  // namespace

int data_command(int argc, char** argv) {
  return guarded("data", [&] {
    Args a(argc, argv, {}, {"task", "task-options", "out"});
    const std::string out = a.get("out", "");
    if (out.empty()) throw std::invalid_argument("--out FOLDER is required (train.tsv, val.tsv, test.tsv go there)");
    const data::Splits s = task_from(a);
    data::write_splits(s, out);
    std::printf("wrote %s/{train,val,test}.tsv: %zu / %zu / %zu examples, vocab %d, %d classes, longest %lld tokens\n",
                out.c_str(), s.train.size(), s.val.size(), s.test.size(), s.train.vocab_size, s.train.num_classes,
                (long long)std::max({s.train.max_length(), s.val.max_length(), s.test.max_length()}));
    return 0;
  });
}

int train_command(int argc, char** argv) {
  return guarded("train", [&] {
    Args a(argc, argv, {"resume", "quiet"},
           {"task", "task-options", "attention", "fastrpb", "layers", "dim", "heads", "ffn", "dropout", "positions",
            "pooling", "steps", "batch", "lr", "warmup", "weight-decay", "clip", "eval-every", "log-every", "threads",
            "seed", "out", "stop-after", "eval-limit", "bucket", "nproc", "dist-timeout"});
    // Data parallel: --nproc N launches N local ranks of this command; RANK/WORLD_SIZE (torchrun)
    // make this process one rank. --dist-timeout: seconds a collective may wait for a peer.
    const int64_t nproc = a.get_int("nproc", 1), dist_timeout = a.get_int("dist-timeout", 300);
    if (nproc < 1) throw std::invalid_argument("--nproc must be >= 1 (local processes), got " + std::to_string(nproc));
    if (dist_timeout < 1) throw std::invalid_argument("--dist-timeout must be >= 1 (seconds), got " + std::to_string(dist_timeout));
    if (nproc > 1) {
      if (std::getenv("RANK") || std::getenv("WORLD_SIZE"))
        throw std::invalid_argument("--nproc launches a group of its own; this process is already rank " +
                                    std::string(std::getenv("RANK") ? std::getenv("RANK") : "?") + " of one (RANK/WORLD_SIZE set)");
      // The ranks get every argument but --nproc and --threads; the threads are divided among them.
      const int64_t total = a.get_int("threads", int64_t(std::max(1u, std::thread::hardware_concurrency())));
      std::vector<std::string> rest;
      for (int i = 0; i < argc; ++i) {
        const std::string s = argv[i];
        if (s == "--nproc" || s == "--threads") ++i;
        else if (s.rfind("--nproc=", 0) != 0 && s.rfind("--threads=", 0) != 0) rest.push_back(s);
      }
      return launch_local(int(nproc), int(std::max<int64_t>(1, total / nproc)), rest, std::chrono::seconds(dist_timeout));
    }
    TrainConfig c;
    c.model.attention = a.get("attention", "softmax");
    c.model.fastrpb = a.get("fastrpb", "none");
    c.model.layers = a.get_int("layers", 2);
    c.model.dim = a.get_int("dim", 64);
    c.model.heads = a.get_int("heads", 2);
    c.model.ffn = a.get_int("ffn", 128);
    c.model.dropout = a.get_double("dropout", 0.1);
    c.model.positions = a.get("positions", "learned");
    c.model.pooling = a.get("pooling", "mean");
    c.steps = a.get_int("steps", 1000);
    c.batch = a.get_int("batch", 32);
    c.bucket = a.get_int("bucket", 1);
    if (c.bucket < 1) throw std::invalid_argument("--bucket must be >= 1 (batches per length-sorted pool; 1: off)");
    c.lr = a.get_double("lr", 1e-3);
    c.warmup = a.get_int("warmup", 100);
    c.weight_decay = a.get_double("weight-decay", 0.01);
    c.clip = a.get_double("clip", 1.0);
    c.eval_every = a.get_int("eval-every", 200);
    c.log_every = a.get_int("log-every", 20);
    c.threads = int(a.get_int("threads", 0));
    c.seed = uint64_t(a.get_int("seed", 0));
    c.model.seed = c.seed;
    c.out_dir = a.get("out", "");
    c.resume = a.flag("resume");
    c.quiet = a.flag("quiet");
    c.stop_after = a.get_int("stop-after", -1);
    c.dist = Distributed::from_environment(std::chrono::seconds(dist_timeout));
    const data::Splits s = task_from(a);
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
                r.world > 1 ? (", communication " + std::to_string(int(std::lround(100 * r.comm_seconds / std::max(r.train_seconds, 1e-9)))) +
                               "% of step time").c_str() : "");
    return 0;
  });
}

int eval_command(int argc, char** argv) {
  return guarded("eval", [&] {
    Args a(argc, argv, {}, {"checkpoint", "task", "task-options", "batch", "threads", "eval-limit"});
    const std::string ckpt = a.get("checkpoint", "");
    if (ckpt.empty()) throw std::invalid_argument("--checkpoint FILE is required");
    if (a.get_int("threads", 0) > 0) torch::set_num_threads(int(a.get_int("threads", 0)));
    nn::Classifier model = load_model(ckpt);
    const data::Splits s = task_from(a);
    const auto& m = model->config();
    if (s.test.vocab_size > m.vocab_size || s.test.num_classes != m.num_classes)
      throw std::invalid_argument("the task's vocabulary (" + std::to_string(s.test.vocab_size) + ") or classes (" +
                                  std::to_string(s.test.num_classes) + ") do not match the checkpoint's model (" +
                                  std::to_string(m.vocab_size) + ", " + std::to_string(m.num_classes) + ")");
    const EvalResult r = evaluate(model, s.test, a.get_int("batch", 64));
    std::printf("test accuracy %.4f, loss %.4f, %lld examples (peak memory %.0f MiB, %d threads)\n", r.accuracy,
                r.loss, (long long)r.examples, peak_memory_mib(), torch::get_num_threads());
    return 0;
  });
}

}  // namespace longattn::train
