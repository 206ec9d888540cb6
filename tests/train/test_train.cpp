#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <map>
#include <string>

#include "apps/data/tasks.h"
#include "apps/train/checkpoint_file.h"
#include "apps/train/trainer.h"
#include "nn/attention.h"

using namespace longattn;

namespace {

data::Splits detect_splits(int64_t length = 24) {
  data::Options o = data::Options::parse("length=" + std::to_string(length) + " classes=4 noise=8 n_train=512 n_val=128 n_test=128 seed=1");
  return data::load_task("detect", o);
}

train::TrainConfig tiny(const std::string& attention) {
  train::TrainConfig c;
  c.model.attention = attention;
  c.model.layers = 1;
  c.model.dim = 32;
  c.model.heads = 2;
  c.model.ffn = 64;
  c.model.dropout = 0.0;
  c.steps = 150;
  c.batch = 32;
  c.lr = 3e-3;
  c.warmup = 10;
  c.eval_every = 0;
  c.threads = 1;
  c.quiet = true;
  return c;
}

std::string temp_dir(const std::string& name) {
  return ::testing::TempDir() + "longattn_train_" + std::to_string(::getpid()) + "_" + name;
}

}  // namespace

// A trivially learnable task (a single marker token names the class among noise tokens): every
// registered attention, with and without FastRPB, must reach near-perfect test accuracy quickly.
// Chance is 25%; 95% leaves room for a handful of mistakes on 128 test examples.
TEST(Train, TinyModelLearnsDetectWithEveryAttention) {
  const data::Splits s = detect_splits();
  for (const auto& entry : nn::attention_registry())
    for (const char* rpb : {"none", "1d"}) {
      train::TrainConfig c = tiny(entry.name);
      c.model.fastrpb = rpb;
      const train::TrainResult r = train::train(c, s);
      EXPECT_GE(r.test.accuracy, 0.95) << entry.name << " fastrpb=" << rpb << " loss " << r.final_train_loss;
    }
}

TEST(Train, ResumeGivesTheSameParametersAsAnUnstoppedRun) {
  const data::Splits s = detect_splits(16);
  train::TrainConfig c = tiny("softmax");
  c.model.dropout = 0.1;  // dropout draws random numbers: their state must be restored too
  c.steps = 40;
  c.eval_every = 10;
  c.out_dir = temp_dir("straight");
  train::train(c, s);
  c.out_dir = temp_dir("resumed");
  c.stop_after = 23;
  const train::TrainResult stopped = train::train(c, s);
  EXPECT_EQ(stopped.steps_done, 23);
  EXPECT_EQ(stopped.threads, 1);  // --threads is applied (tiny() asks for 1)
  c.stop_after = -1;
  c.resume = true;
  EXPECT_EQ(train::train(c, s).steps_done, 40);
  // The log of the resumed run holds each step once, as the straight run's does (the stopped
  // run checkpointed at step 20 and logged up to 23; the resumed one repeats 21 to 23).
  auto steps_logged = [](const std::string& dir) {
    std::ifstream in(dir + "/metrics.jsonl");
    std::string all, line;
    while (std::getline(in, line)) all += line.substr(0, line.find(", \"split\": \"") + 20) + "\n";
    return all;
  };
  EXPECT_EQ(steps_logged(temp_dir("resumed")), steps_logged(temp_dir("straight")));
  EXPECT_NE(steps_logged(temp_dir("straight")).find("{\"step\": 40, \"split\": \"test\""), std::string::npos);
  auto a = train::load_model(temp_dir("straight") + "/latest.ckpt");
  auto b = train::load_model(temp_dir("resumed") + "/latest.ckpt");
  auto pa = a->named_parameters(), pb = b->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& item : pa) EXPECT_TRUE(torch::equal(item.value(), pb[item.key()])) << item.key();
}

TEST(Train, TruncatedOrCorruptedCheckpointsGiveClearErrors) {
  const data::Splits s = detect_splits(16);
  train::TrainConfig c = tiny("softmax");
  c.steps = 2;
  c.out_dir = temp_dir("corrupt");
  train::train(c, s);
  const std::string path = c.out_dir + "/latest.ckpt";
  std::string bytes;
  {
    std::ifstream is(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(is), {});
  }
  auto expect_error = [&](const std::string& content, const std::string& reason) {
    const std::string p = c.out_dir + "/bad.ckpt";
    std::ofstream(p, std::ios::binary) << content;
    try {
      train::load_model(p);
      ADD_FAILURE() << "accepted a bad checkpoint (" << reason << ")";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("checkpoint " + p + ": " + reason), std::string::npos) << e.what();
    }
  };
  expect_error(bytes.substr(0, bytes.size() - 100), "truncated");
  std::string flipped = bytes;
  flipped[flipped.size() / 2] ^= 0x5A;
  expect_error(flipped, "corrupted: the CRC-32");
  expect_error("hello\n", "not a longattn checkpoint");
  EXPECT_NO_THROW(train::load_model(path));
}

TEST(Model, UnknownAttentionListsTheKnownOnes) {
  nn::ModelConfig m;
  m.vocab_size = 10;
  m.attention = "sofmax";
  try {
    nn::Classifier c(m);
    ADD_FAILURE();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("known: softmax, softmax-rpe"), std::string::npos) << e.what();
  }
}

// The same configuration has the same parameter count whatever the attention, except where the
// mechanism adds parameters: softmax-rpe and kernelized-rpe heads x (2M - 1) biases per layer,
// shatter its partition's P x (degree + 1) = 4 x 3 weights per layer, yoso-c its depthwise
// convolution of the values (heads x window 33 per layer), FastRPB heads x (2M - 1)
// per layer (2-D: heads x (2 max(height, width) - 1)). favor's projections are buffers, not
// parameters. Every registered name must appear here, so a new one gets its count checked.
TEST(Model, ParameterCountsDependOnlyOnWhatTheMechanismAdds) {
  nn::ModelConfig m;
  m.vocab_size = 20, m.max_len = 50, m.layers = 2, m.dim = 16, m.heads = 2, m.ffn = 32;
  m.attention = "softmax";
  nn::Classifier base(m);
  const int64_t n = nn::count_parameters(*base), bias = m.layers * m.heads * (2 * m.max_len - 1);
  const std::map<std::string, int64_t> extra = {{"softmax", 0}, {"softmax-rpe", bias}, {"linear", 0}, {"sikf", 0},
                                                {"favor", 0}, {"kernelized-rpe", bias}, {"yoso", 0}, {"yoso-e", 0},
                                                {"yoso-c", m.layers * m.heads * 33},
                                                {"shatter", m.layers * 4 * 3}};
  for (const auto& e : nn::attention_registry()) {
    ASSERT_TRUE(extra.count(e.name)) << e.name << ": add its expected parameter count here";
    m.attention = e.name;
    nn::Classifier other(m);
    EXPECT_EQ(nn::count_parameters(*other), n + extra.at(e.name)) << e.name;
  }
  m.attention = "softmax";
  m.fastrpb = "1d";
  nn::Classifier rpb(m);
  EXPECT_EQ(nn::count_parameters(*rpb), n + bias);
  m.fastrpb = "2d", m.height = 5, m.width = 7;
  nn::Classifier rpb2(m);
  EXPECT_EQ(nn::count_parameters(*rpb2), n + m.layers * m.heads * (2 * 7 - 1));
}

// FastRPB by FFT against the dense Toeplitz product it stands for, 1-D and 2-D (with a CLS slot).
TEST(FastRPB, MatchesDenseBias) {
  torch::manual_seed(3);
  const int64_t H = 2, M = 16, D = 3;
  nn::FastRPB one(H, M, false, 0, 0);
  torch::NoGradGuard g;
  one->weights.copy_(torch::randn({H, 2 * M - 1}, torch::kFloat));
  auto v = torch::randn({2, H, 7, D});
  auto mask = torch::ones({2, 7}, torch::kBool);
  mask[1][6] = false;
  auto vm = v * mask.unsqueeze(1).unsqueeze(-1).to(torch::kFloat);
  auto dense = torch::zeros_like(v);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < 7; ++i)
      for (int64_t j = 0; j < 7; ++j) dense.select(1, h).select(1, i) += one->weights[h][j - i + M - 1] * vm.select(1, h).select(1, j);
  EXPECT_TRUE(torch::allclose(one->forward(v, mask), dense, 1e-4, 1e-5));

  nn::FastRPB two(H, M, true, 3, 4);
  two->weights.copy_(torch::randn({H, 2 * M - 1}));
  auto v2 = torch::randn({1, H, 13, D});  // CLS + 3x4 grid
  auto m2 = torch::ones({1, 13}, torch::kBool);
  auto d2 = torch::zeros_like(v2);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t p = 0; p < 12; ++p)
      for (int64_t q = 0; q < 12; ++q) {
        const int64_t a = p / 4, b = p % 4, a2 = q / 4, b2 = q % 4;
        auto w = two->weights[h][a2 - a + M - 1] + two->weights[h][b2 - b + M - 1];
        d2.select(1, h).select(1, 1 + p) += w * v2.select(1, h).select(1, 1 + q);
      }
  EXPECT_TRUE(torch::allclose(two->forward(v2, m2), d2, 1e-4, 1e-5));
}

// The token embedding's initial scale: torch's N(0, 1) by default (and then absent from the
// configuration string, so checkpoints written before the option still resume), PyTorch-LRA's
// N(0, 0.02) on request, round-tripped through the string a checkpoint stores.
TEST(ModelConfigTest, EmbeddingInitScale) {
  nn::ModelConfig c;
  c.vocab_size = 64, c.dim = 32, c.max_len = 8;
  EXPECT_EQ(c.to_string().find("embed_std"), std::string::npos);
  torch::manual_seed(3);
  nn::Classifier base(c);
  c.embed_std = 0.02;
  const nn::ModelConfig back = nn::ModelConfig::from_string(c.to_string());
  EXPECT_EQ(back.embed_std, 0.02);
  torch::manual_seed(3);
  nn::Classifier lra(back);
  auto std_of = [](nn::Classifier& m) {
    for (const auto& p : m->named_parameters())
      if (p.key().find("embed.weight") != std::string::npos) return p.value().std().item<double>();
    return -1.0;
  };
  // 2048 normal draws: the sample std is within 2% of sigma (1 sigma ~ 1.6%) x 5.
  EXPECT_NEAR(std_of(base), 1.0, 0.08);
  EXPECT_NEAR(std_of(lra), 0.02, 0.0016);
  c.embed_std = 0;
  EXPECT_THROW(nn::Classifier bad(c), std::invalid_argument);
}
