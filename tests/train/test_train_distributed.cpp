// Data-parallel `longattn train` (apps/train/distributed.h): the tool itself, run with --nproc on
// loopback (Gloo), against the same command in one process. Small models, 20 steps.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <regex>
#include <string>
#include <thread>

#include "apps/train/distributed.h"
#include "apps/train/trainer.h"

using namespace longattn;

namespace {

struct ToolRun {
  int status = -1;
  std::string output;  // stdout and stderr
  double seconds = 0;
};

// Runs `longattn train` with the options of a tiny detect model plus `extra`; on_line sees each line
// of output as it comes (the first is the launcher's pids).
template <class F>
ToolRun train_tool(const std::string& extra, F&& on_line) {
  // The tool refuses a flag given twice: `extra` may set its own evaluation and log rates.
  const std::string rates =
      extra.find("--eval-every") == std::string::npos ? "--eval-every 10 --log-every 1000 " : "";
  const std::string cmd = std::string(LONGATTN_TOOL) +
                          " train --task detect --task-options 'length=24 classes=4 noise=8 n_train=512 n_val=128 "
                          "n_test=128 seed=1' --layers 1 --dim 32 --heads 2 --ffn 64 --dropout 0.1 --batch 16 "
                          "--lr 3e-3 --warmup 5 " +
                          rates + extra + " 2>&1";
  ToolRun r;
  const auto t0 = std::chrono::steady_clock::now();
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, p)) {
    r.output += buf;
    on_line(std::string(buf));
  }
  r.status = ::pclose(p);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

ToolRun train_tool(const std::string& extra) {
  return train_tool(extra, [](const std::string&) {});
}

std::string temp_dir(const std::string& name) {
  return ::testing::TempDir() + "longattn_dp_" + std::to_string(::getpid()) + "_" + name;
}

// The validation losses printed ("step 10: val loss 1.2345, ...") in order.
std::vector<double> val_losses(const std::string& output) {
  std::vector<double> v;
  const std::regex re("step [0-9]+: val loss ([0-9.]+)");
  for (auto it = std::sregex_iterator(output.begin(), output.end(), re); it != std::sregex_iterator(); ++it)
    v.push_back(std::stod((*it)[1]));
  return v;
}

struct Difference {
  double largest = 0, mean = 0;  // of |a - b| over every parameter
  bool equal = true;             // bit-identical
};

Difference compare(const std::string& ckpt_a, const std::string& ckpt_b) {
  auto a = train::load_model(ckpt_a), b = train::load_model(ckpt_b);
  auto pa = a->named_parameters(), pb = b->named_parameters();
  Difference d;
  d.equal = pa.size() == pb.size();
  double sum = 0;
  int64_t n = 0;
  for (const auto& item : pa) {
    const auto diff = (item.value() - pb[item.key()]).abs();
    d.largest = std::max(d.largest, diff.max().item<double>());
    sum += diff.sum().item<double>(), n += diff.numel();
    d.equal = d.equal && torch::equal(item.value(), pb[item.key()]);
  }
  d.mean = sum / double(std::max<int64_t>(n, 1));
  return d;
}

// Gradients that differ only in float32 summation order (~1e-7 relative) go through 20 AdamW steps at
// lr 3e-3: a coordinate whose gradient is near zero can still move by a good part of lr there (Adam
// divides by the gradient's own scale; seen: 1.6e-4), a typical one by far less (seen: ~1e-7 mean).
// A dropout mask or a row out of place moves typical coordinates by O(lr). Bounds: the largest
// difference below lr / 3, the mean below lr / 300.
void expect_same_model(const Difference& d, const std::string& what) {
  EXPECT_LT(d.largest, 1e-3) << what;
  EXPECT_LT(d.mean, 1e-5) << what;
  std::printf("%s: parameter differences: largest %.3g, mean %.3g%s\n", what.c_str(), d.largest, d.mean,
              d.equal ? " (bit-identical)" : "");
}

}  // namespace

// --batch is the global batch: one process on 16 examples and two on 8 each (the same rows, padding,
// dropout masks and random draws) compute the same gradient up to float32 summation order: the same
// model (expect_same_model) and printed validation losses within 1e-3 relative.
TEST(TrainDistributed, OneAndTwoProcessesTrainTheSameModel) {
  ASSERT_TRUE(train::distributed_gloo_built()) << "this build has no Gloo support (install libgloo-dev)";
  for (const char* attention : {"softmax", "sikf"}) {
    const std::string one = temp_dir(std::string("one_") + attention), two = temp_dir(std::string("two_") + attention);
    const std::string common = std::string("--attention ") + attention + " --steps 20 --dist-timeout 60";
    const ToolRun a = train_tool(common + " --nproc 1 --threads 1 --out " + one);
    const ToolRun b = train_tool(common + " --nproc 2 --threads 2 --out " + two);
    ASSERT_EQ(a.status, 0) << a.output;
    ASSERT_EQ(b.status, 0) << b.output;
    EXPECT_NE(b.output.find("2 processes x 1 threads"), std::string::npos) << b.output;
    const auto la = val_losses(a.output), lb = val_losses(b.output);
    ASSERT_EQ(la.size(), 2u) << a.output;  // steps 10 and 20
    ASSERT_EQ(lb.size(), la.size()) << b.output;
    for (size_t i = 0; i < la.size(); ++i) EXPECT_NEAR(lb[i], la[i], 1e-3 * la[i]) << attention << " evaluation " << i;
    expect_same_model(compare(one + "/latest.ckpt", two + "/latest.ckpt"), std::string(attention) + ", 1 vs 2 processes");
  }
}

// Resume of a 2-process run is exact; resuming it on 1 process continues it (not bit for bit: the
// summation order changes) to the same model (expect_same_model).
TEST(TrainDistributed, ResumeOnTheSameOrAnotherNumberOfProcesses) {
  const std::string straight = temp_dir("straight"), resumed = temp_dir("resumed"), other = temp_dir("other");
  const std::string common = " --steps 20 --nproc 2 --threads 2 --dist-timeout 60 --out ";
  ASSERT_EQ(train_tool(common + straight).status, 0);
  const ToolRun stopped = train_tool(common + resumed + " --stop-after 13");
  ASSERT_EQ(stopped.status, 0) << stopped.output;
  EXPECT_NE(stopped.output.find("stopped at step 13"), std::string::npos) << stopped.output;
  const ToolRun again = train_tool(common + resumed + " --resume");
  ASSERT_EQ(again.status, 0) << again.output;
  EXPECT_TRUE(compare(straight + "/latest.ckpt", resumed + "/latest.ckpt").equal) << "2-process resume is not exact";

  ASSERT_EQ(train_tool(common + other + " --stop-after 13").status, 0);
  const ToolRun one = train_tool(" --steps 20 --nproc 1 --threads 1 --out " + other + " --resume");
  ASSERT_EQ(one.status, 0) << one.output;
  EXPECT_NE(one.output.find("test accuracy"), std::string::npos) << one.output;
  expect_same_model(compare(straight + "/latest.ckpt", other + "/latest.ckpt"), "2 processes, resumed on 1");
}

// A rank killed mid-run (SIGKILL: no chance to say goodbye) or stopped (SIGSTOP: a hang) ends the
// run: the launcher names the rank, the other rank says which rank stopped answering, and all is over
// within the timeout (5 s) plus the 2 s heartbeat probe plus the launcher's grace (timeout + 10 s).
TEST(TrainDistributed, ADeadOrHungRankEndsTheRunWithItsName) {
  for (const int sig : {SIGKILL, SIGSTOP}) {
    pid_t victim = -1;
    bool sent = false;
    std::chrono::steady_clock::time_point sent_at;
    const ToolRun r = train_tool(" --steps 1000000 --eval-every 0 --log-every 1 --nproc 2 --threads 2 --dist-timeout 5",
                             [&](const std::string& line) {
                               std::smatch m;
                               if (std::regex_search(line, m, std::regex("rank 1 pid ([0-9]+)")))
                                 victim = pid_t(std::stol(m[1]));
                               if (!sent && victim > 0 && line.rfind("step 3/", 0) == 0) {  // mid-training
                                 ::kill(victim, sig);
                                 sent = true, sent_at = std::chrono::steady_clock::now();
                               }
                             });
    const double after = std::chrono::duration<double>(std::chrono::steady_clock::now() - sent_at).count();
    ASSERT_GT(victim, 0) << r.output;
    ASSERT_TRUE(sent) << r.output;
    EXPECT_NE(r.status, 0) << r.output;
    EXPECT_LT(after, 5 + 2 + 15 + 5) << r.output;  // timeout, probe, the launcher's grace, slack
    EXPECT_NE(r.output.find("rank 0: error:"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("rank 1 stopped"), std::string::npos) << r.output;
    if (sig == SIGKILL) EXPECT_NE(r.output.find("rank 1 (pid " + std::to_string(victim) + ") was killed by signal 9"), std::string::npos) << r.output;
    ::kill(victim, SIGKILL);  // the stopped one, if the launcher has not already
  }
}

TEST(TrainDistributed, BucketedAllReduceOfOneRankIsTheIdentityAndCarriesTheExtras) {
  // A group of one (WORLD_SIZE=1 needs no store): the buckets' packing and unpacking alone.
  ::setenv("RANK", "0", 1), ::setenv("WORLD_SIZE", "1", 1);
  auto d = train::Distributed::from_environment(std::chrono::seconds(5));
  ::unsetenv("RANK"), ::unsetenv("WORLD_SIZE");
  ASSERT_TRUE(d);
  std::vector<torch::Tensor> params = {torch::zeros({3, 4}, torch::requires_grad()), torch::zeros({1000}, torch::requires_grad()),
                                       torch::zeros({5}, torch::requires_grad())};
  params[0].mutable_grad() = torch::randn({3, 4});
  params[1].mutable_grad() = torch::randn({1000});  // params[2]: no gradient, counts as zeros
  const auto g0 = params[0].grad().clone(), g1 = params[1].grad().clone();
  std::vector<float> extra = {2.5f, 7.f};
  train::all_reduce_gradients(*d, params, extra, 64);  // 16 floats per bucket: several buckets
  EXPECT_TRUE(torch::equal(params[0].grad(), g0));
  EXPECT_TRUE(torch::equal(params[1].grad(), g1));
  ASSERT_TRUE(params[2].grad().defined());
  EXPECT_EQ(params[2].grad().abs().sum().item<float>(), 0.f);
  EXPECT_EQ(extra, (std::vector<float>{2.5f, 7.f}));
  EXPECT_NE(train::parameter_hash(params), train::parameter_hash({params[0], params[1]}));
}
