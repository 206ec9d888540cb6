// `longattn bench`: times registered operators and their baselines side by side in one
// process; medians after warm-up; GFLOP/s against the same run's sgemm rate; peak memory.
#include <ATen/Parallel.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>

#include "bench/memory.h"
#include "bench/registry.h"
#include "command.h"
#include "flags.h"
#include "kernels/common/cpu_features.h"

namespace longattn::bench {
namespace {

using app::Args;
using app::Flags;
using app::UsageError;
using Clock = std::chrono::steady_clock;

struct Record {
  std::string suite, op, mode, skipped;
  bool baseline = false;
  Shape shape;
  double time_s = NAN, gflops = NAN, frac_sgemm = NAN;
  // CPU seconds of the whole process per run (all threads), median: unlike wall time, it is
  // not inflated when other jobs share the cores, so GFLOP/s per core-second is load-robust.
  double cpu_s = NAN, gflops_per_core = NAN;
  double peak_bytes = NAN, beyond_outputs_bytes = NAN;
  std::vector<double> times;
};

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The machine's GEMM rate with the same thread count: torch's sgemm (MKL) on 2048².
double measure_sgemm_gflops() {
  torch::NoGradGuard ng;
  auto a = at::randn({2048, 2048}), b = at::randn({2048, 2048});
  at::mm(a, b);
  std::vector<double> t;
  for (int i = 0; i < 5; ++i) {
    auto t0 = Clock::now();
    at::mm(a, b);
    t.push_back(seconds_since(t0));
  }
  return 2.0 * 2048 * 2048 * 2048 / median(t) / 1e9;
}

std::string machine_description() {
  std::ifstream f("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  return model;
}

const char* dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return "float64";
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: return "float32";
  }
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (c == '\n') { o += "\\n"; continue; }
    o += c;
  }
  return o;
}

std::string num(double x) {
  if (!std::isfinite(x)) return "null";
  std::ostringstream s;
  s << std::setprecision(6) << x;
  return s.str();
}

void measure(const std::function<void()>& fn, double output_bytes, int warmup, int reps,
             double budget_s, Record& r) {
  // First run: memory (peak resident beyond what was resident before).
  int64_t before = resident_bytes();
  reset_peak();
  auto t0 = Clock::now();
  fn();
  double first = seconds_since(t0);
  r.peak_bytes = static_cast<double>(std::max<int64_t>(0, peak_bytes() - before));
  r.beyond_outputs_bytes = std::max(0.0, r.peak_bytes - output_bytes);
  for (int i = 1; i < warmup; ++i) fn();
  int n = reps;
  if (first * reps > budget_s) n = std::max(1, static_cast<int>(budget_s / std::max(first, 1e-9)));
  if (n == 1 && warmup <= 1 && first * 2 <= budget_s) n = 2;
  std::vector<double> cpu;
  for (int i = 0; i < n; ++i) {
    auto t1 = Clock::now();
    double c1 = process_cpu_seconds();
    fn();
    r.times.push_back(seconds_since(t1));
    cpu.push_back(process_cpu_seconds() - c1);
  }
  r.time_s = median(r.times);
  r.cpu_s = median(cpu);
}

void write_json(const std::string& path, const std::vector<Record>& recs, double sgemm,
                int threads) {
  std::ofstream f(path);
  if (!f) throw std::runtime_error("cannot write " + path);
  std::time_t now = std::time(nullptr);
  char date[64];
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  f << "{\n  \"machine\": \"" << json_escape(machine_description()) << "\",\n"
    << "  \"isa\": \"" << kernels::build_isa() << "\",\n"
    << "  \"threads\": " << threads << ",\n  \"torch\": \"" << TORCH_VERSION << "\",\n"
    << "  \"date\": \"" << date << "\",\n  \"sgemm_gflops\": " << num(sgemm) << ",\n"
    << "  \"records\": [\n";
  for (size_t i = 0; i < recs.size(); ++i) {
    const auto& r = recs[i];
    f << "    {\"suite\": \"" << r.suite << "\", \"op\": \"" << r.op << "\", \"baseline\": "
      << (r.baseline ? "true" : "false") << ", \"mode\": \"" << r.mode << "\", \"B\": " << r.shape.B
      << ", \"H\": " << r.shape.H << ", \"N\": " << r.shape.N << ", \"D\": " << r.shape.D
      << ", \"causal\": " << (r.shape.causal ? "true" : "false")
      << ", \"rel_bias\": " << (r.shape.rel_bias ? "true" : "false")
      << ", \"dtype\": \"" << dtype_name(r.shape.dtype) << "\"";
    for (auto& [k, v] : r.shape.extra) f << ", \"" << k << "\": " << num(v);
    f << ", \"time_s\": " << num(r.time_s) << ", \"cpu_s\": " << num(r.cpu_s)
      << ", \"gflops_per_core_cpu\": " << num(r.gflops_per_core) << ", \"gflops\": " << num(r.gflops)
      << ", \"frac_sgemm\": " << num(r.frac_sgemm) << ", \"peak_bytes\": " << num(r.peak_bytes)
      << ", \"beyond_outputs_bytes\": " << num(r.beyond_outputs_bytes) << ", \"times\": [";
    for (size_t j = 0; j < r.times.size(); ++j) f << (j ? ", " : "") << num(r.times[j]);
    f << "], \"skipped\": \"" << json_escape(r.skipped) << "\"}" << (i + 1 < recs.size() ? "," : "")
      << "\n";
  }
  f << "  ]\n}\n";
}

std::string shape_label(const Shape& s) {
  std::ostringstream o;
  o << "B=" << s.B << " H=" << s.H << " N=" << s.N << " D=" << s.D;
  if (s.dtype != at::kFloat) o << " " << dtype_name(s.dtype);
  for (auto& [k, v] : s.extra) o << " " << k << "=" << v;
  return o.str();
}

std::string fmt(double x, int prec) {
  if (!std::isfinite(x)) return "";
  std::ostringstream s;
  s << std::fixed << std::setprecision(prec) << x;
  return s.str();
}

// One Markdown table; "vs ours" = this case's time / the suite's first case's time.
std::string markdown(const std::vector<Record>& recs, double sgemm, int threads) {
  std::ostringstream o;
  o << "Machine: " << machine_description() << " (" << kernels::build_isa() << "), " << threads
    << " threads, torch " << TORCH_VERSION << "; sgemm in this run: " << fmt(sgemm, 1)
    << " GFLOP/s.\n\n"
    << "| suite | shape | causal | bias | mode | op | time (ms) | GFLOP/s | % sgemm | peak MiB | beyond outputs MiB | time / first op |\n"
    << "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|\n";
  std::map<std::string, double> first;
  for (auto& r : recs) {
    std::string key = r.suite + shape_label(r.shape) + (r.shape.causal ? "c" : "") +
                      (r.shape.rel_bias ? "b" : "") + r.mode;
    if (!first.count(key) && std::isfinite(r.time_s)) first[key] = r.time_s;
    double ratio = first.count(key) ? r.time_s / first[key] : NAN;
    o << "| " << r.suite << " | " << shape_label(r.shape) << " | " << (r.shape.causal ? "yes" : "no")
      << " | " << (r.shape.rel_bias ? "yes" : "no") << " | " << r.mode << " | " << r.op
      << (r.baseline ? " (baseline)" : "") << " | ";
    if (!r.skipped.empty()) {
      o << "skipped: " << r.skipped << " | | | | | |\n";
      continue;
    }
    o << fmt(r.time_s * 1e3, 2) << " | " << fmt(r.gflops, 1) << " | "
      << fmt(100 * r.frac_sgemm, 0) << " | " << fmt(r.peak_bytes / (1 << 20), 0) << " | "
      << fmt(r.beyond_outputs_bytes / (1 << 20), 0) << " | " << fmt(ratio, 2) << " |\n";
  }
  return o.str();
}

int run_bench(const Args& args) {
  Flags flags("bench",
              {{"suite", "comma-separated suites (default: all); see --list"},
               {"cases", "only cases whose name contains one of these, comma-separated (default: all)"},
               {"n", "sequence lengths, e.g. 1024,4096 (default: the suite's grid)"},
               {"b", "batch, >= 1 (default: the suite's grid)"}, {"h", "heads, >= 1 (default: the suite's grid)"},
               {"d", "head dim, >= 1 (default: the suite's grid)"},
               {"causal", "0, 1 or 0,1 (default: the suite's grid)"},
               {"rel-bias", "0, 1 or 0,1 (default: the suite's grid)"},
               {"modes", "fwd and/or fwd+bwd, comma-separated (default: both)"},
               {"reps", "timed repetitions per measurement (default 5)"},
               {"warmup", "warm-up runs (default 1; the first also measures memory)"},
               {"budget", "seconds per measurement before repetitions are cut (default 20)"},
               {"threads", "thread count (default 2)"},
               {"dtype", "float32, float64, bfloat16 and/or float16, comma-separated: each case in each, side by side (default float32)"},
               {"path", "fused and/or reference, comma-separated: each longattn case on each path (LONGATTN_PATH, docs/reference_path.md), side by side; baselines once (default: the environment's)"},
               {"max-gib", "skip cases whose estimated working set exceeds this (default 16)"},
               {"json", "write results as JSON to this file (default: none)"},
               {"md", "write the Markdown table to this file (default: none)"},
               {"quick", "the suites' small grids"}, {"list", "list the suites and cases, run nothing"}},
              {"quick", "list"});
  if (app::wants_help(args)) {
    std::cout << "usage: longattn bench [flags]\n" << flags.help();
    return 0;
  }
  flags.parse(args);
  if (flags.has("list")) {
    for (auto& s : suites()) {
      std::cout << s.name << ": " << s.description << "\n";
      for (auto& c : s.cases) std::cout << "  " << c.name << (c.baseline ? " (baseline)" : "") << "\n";
    }
    return 0;
  }
  const int threads = static_cast<int>(flags.get_int("threads", 2, 1, 1024));
  const double max_gib = flags.get_double("max-gib", 16, 0.0, 1e6, true);
  const int reps = static_cast<int>(flags.get_int("reps", 5, 1, 1000000));
  const int warmup = static_cast<int>(flags.get_int("warmup", 1, 1, 1000000));
  const double budget = flags.get_double("budget", 20, 0.0, 1e9, true);
  auto modes = flags.get_list("modes", {"fwd", "fwd+bwd"});
  for (auto& m : modes)
    if (m != "fwd" && m != "fwd+bwd")
      throw UsageError("flag --modes got '" + m + "'; allowed: fwd, fwd+bwd");
  std::vector<at::ScalarType> dtypes;
  for (auto& d : flags.get_list("dtype", {"float32"})) {
    if (d == "float32") dtypes.push_back(at::kFloat);
    else if (d == "float64") dtypes.push_back(at::kDouble);
    else if (d == "bfloat16") dtypes.push_back(at::kBFloat16);
    else if (d == "float16") dtypes.push_back(at::kHalf);
    else throw UsageError("flag --dtype got '" + d + "'; allowed: float32, float64, bfloat16, float16");
  }
  // The longattn operators read LONGATTN_PATH at every call: each path is set around its
  // measurements. Empty: leave the environment as it is.
  std::vector<std::string> paths = flags.get_list("path", {});
  for (auto& p : paths)
    if (p != "fused" && p != "reference") throw UsageError("flag --path got '" + p + "'; allowed: fused, reference");
  if (paths.empty()) paths.push_back("");
  const auto ns = flags.get_int_list("n", {}, 1);
  const auto causals = flags.get_int_list("causal", {}, 0, 1);
  const auto biases = flags.get_int_list("rel-bias", {}, 0, 1);
  const int64_t b_flag = flags.get_int("b", 0, 1), h_flag = flags.get_int("h", 0, 1), d_flag = flags.get_int("d", 0, 1);
  at::set_num_threads(threads);
  set_max_case_bytes(max_gib * double(1ull << 30));

  std::vector<std::string> wanted = flags.get_list("suite", {});
  for (auto& w : wanted) {
    bool found = false;
    for (auto& s : suites()) found |= s.name == w;
    if (!found) {
      std::string known;
      for (auto& s : suites()) known += (known.empty() ? "" : ", ") + s.name;
      throw UsageError("flag --suite got '" + w + "'; allowed: " + known);
    }
  }
  auto case_filter = flags.get_list("cases", {});

  memory_tracking_init();
  const double sgemm = measure_sgemm_gflops();
  std::cout << "# longattn bench: " << machine_description() << ", " << threads
            << " threads, torch " << TORCH_VERSION << ", sgemm " << fmt(sgemm, 1) << " GFLOP/s"
            << (peak_reset_supported() ? "" : " (peak memory reset unsupported: peaks are process-wide)")
            << "\n";

  std::vector<Record> recs;
  for (auto& suite : suites()) {
    if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), suite.name) == wanted.end()) continue;
    std::vector<Shape> grid = suite.default_grid(flags.has("quick"));
    // Command-line overrides replace the grid's values along that axis.
    std::vector<Shape> expanded;
    for (auto base : grid) {
      if (flags.has("b")) base.B = b_flag;
      if (flags.has("h")) base.H = h_flag;
      if (flags.has("d")) base.D = d_flag;
      std::vector<int64_t> n_axis = ns.empty() ? std::vector<int64_t>{base.N} : ns;
      std::vector<int64_t> c_axis = causals.empty() ? std::vector<int64_t>{base.causal} : causals;
      std::vector<int64_t> b_axis = biases.empty() ? std::vector<int64_t>{base.rel_bias} : biases;
      for (auto n : n_axis)
        for (auto c : c_axis)
          for (auto b : b_axis)
            for (auto dt : dtypes) {
              Shape s = base;
              s.N = n, s.causal = c != 0, s.rel_bias = b != 0, s.dtype = dt;
              bool dup = false;
              for (auto& e : expanded)
                dup |= e.N == s.N && e.B == s.B && e.H == s.H && e.D == s.D && e.causal == s.causal &&
                       e.rel_bias == s.rel_bias && e.extra == s.extra && e.dtype == s.dtype;
              if (!dup) expanded.push_back(s);
            }
    }
    for (auto& shape : expanded) {
      for (auto& c : suite.cases) {
        if (!case_filter.empty()) {
          bool hit = false;
          for (auto& f : case_filter) hit |= c.name.find(f) != std::string::npos;
          if (!hit) continue;
        }
        std::string why;
        std::optional<Runner> runner;
        try {
          runner = c.make(shape, why);
        } catch (const std::exception& e) {
          why = std::string("error: ") + e.what();
        }
        for (const std::string& path : paths)
        for (auto& mode : modes) {
          if (c.baseline && path != paths.front()) continue;  // a baseline has one path
          // A baseline that is itself a longattn operator (softmax beside the kernelized ones) runs fused.
          if (!path.empty()) ::setenv("LONGATTN_PATH", c.baseline ? "fused" : path.c_str(), 1);
          Record r;
          r.suite = suite.name, r.op = c.name + (path == "reference" && !c.baseline ? " (reference path)" : ""),
          r.mode = mode, r.baseline = c.baseline, r.shape = shape;
          const bool fb = mode == "fwd+bwd";
          if (!runner) {
            r.skipped = why.empty() ? "not applicable" : why;
          } else if (fb && !runner->forward_backward) {
            r.skipped = "no backward";
          } else {
            try {
              if (fb) {
                measure(runner->forward_backward, runner->output_bytes_backward, warmup, reps, budget, r);
              } else {
                torch::NoGradGuard ng;
                measure(runner->forward, runner->output_bytes_forward, warmup, reps, budget, r);
              }
              double flops = fb ? runner->flops_forward + runner->flops_backward : runner->flops_forward;
              if (flops > 0) {
                r.gflops = flops / r.time_s / 1e9;
                r.frac_sgemm = r.gflops / sgemm;
                r.gflops_per_core = flops / r.cpu_s / 1e9;
              }
            } catch (const std::exception& e) {
              r.skipped = std::string("error: ") + e.what();
            }
          }
          std::cout << suite.name << " | " << shape_label(shape) << (shape.causal ? " causal" : "")
                    << (shape.rel_bias ? " bias" : "") << " | " << mode << " | " << r.op << " | ";
          if (r.skipped.empty())
            std::cout << fmt(r.time_s * 1e3, 2) << " ms"
                      << (std::isfinite(r.gflops) ? ", " + fmt(r.gflops, 1) + " GFLOP/s" : "")
                      << ", cpu " << fmt(r.cpu_s * 1e3, 0) << " ms"
                      << (std::isfinite(r.gflops_per_core) ? " (" + fmt(r.gflops_per_core, 1) + " GFLOP/s per core-second)" : "")
                      << ", peak " << fmt(r.peak_bytes / (1 << 20), 0) << " MiB\n";
          else
            std::cout << "skipped: " << r.skipped << "\n";
          std::cout.flush();
          recs.push_back(std::move(r));
        }
      }
    }
  }
  std::string md = markdown(recs, sgemm, threads);
  std::cout << "\n" << md;
  if (flags.has("json")) write_json(flags.get("json", ""), recs, sgemm, threads);
  if (flags.has("md")) {
    std::ofstream f(flags.get("md", ""));
    if (!f) throw std::runtime_error("cannot write " + flags.get("md", ""));
    f << md;
  }
  return 0;
}

app::RegisterCommand reg({"bench", "time operators against their baselines (JSON, Markdown)", run_bench});

}  // namespace
}  // namespace longattn::bench
