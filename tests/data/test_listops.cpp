#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>
#include <vector>

#include "apps/data/listops.h"
#include "temp_file.h"

using namespace longattn::data;

namespace {

// The vocabulary as docs/data.md specifies it, written out here rather than taken from the header
// constants, so a change of ids in the library shows up as a failure.
enum : int32_t { D0 = 3, MIN = 13, MAX = 14, MED = 15, SM = 16, CLOSE = 17, VOCAB = 18 };

struct Parsed {
  int value = -1;
  int depth = 0;          // levels of the tree, the root and the leaves counted (LRA's max_depth)
  int min_args = 1 << 30;
  int max_args = 0;
  int operators[4] = {0, 0, 0, 0};
};

// An evaluator independent of the generator: a stack machine over the tokens, the median through
// doubles and C++ truncation (what int(np.median(...)) does for non-negative values). Returns
// value -1 for a malformed sequence.
Parsed evaluate(const std::vector<int32_t>& toks) {
  Parsed p;
  struct Frame {
    int32_t op;
    std::vector<double> args;
  };
  std::vector<Frame> stack;
  bool done = false;
  auto deliver = [&](double v) {
    if (stack.empty()) {
      if (done) return false;
      done = true;
      p.value = int(v);
      return true;
    }
    stack.back().args.push_back(v);
    return true;
  };
  for (int32_t t : toks) {
    if (done) return Parsed{};
    if (t >= D0 && t < D0 + 10) {
      p.depth = std::max(p.depth, int(stack.size()) + 1);
      if (!deliver(t - D0)) return Parsed{};
    } else if (t >= MIN && t <= SM) {
      p.operators[t - MIN]++;
      stack.push_back({t, {}});
      p.depth = std::max(p.depth, int(stack.size()));
    } else if (t == CLOSE) {
      if (stack.empty() || stack.back().args.empty()) return Parsed{};
      Frame f = std::move(stack.back());
      stack.pop_back();
      p.min_args = std::min(p.min_args, int(f.args.size()));
      p.max_args = std::max(p.max_args, int(f.args.size()));
      std::vector<double> a = f.args;
      std::sort(a.begin(), a.end());
      double v = 0;
      if (f.op == MIN) v = a.front();
      else if (f.op == MAX) v = a.back();
      else if (f.op == SM) {
        double s = 0;
        for (double x : a) s += x;
        v = double(int(s) % 10);
      } else {
        const size_t n = a.size();
        v = n % 2 ? a[n / 2] : double(int((a[n / 2 - 1] + a[n / 2]) / 2.0));
      }
      if (!deliver(v)) return Parsed{};
    } else {
      return Parsed{};
    }
  }
  if (!stack.empty() || !done) return Parsed{};
  return p;
}

void check_splits(const Splits& s, const ListOpsOptions& o) {
  EXPECT_EQ(int64_t(s.train.size()), o.n_train);
  EXPECT_EQ(int64_t(s.val.size()), o.n_val);
  EXPECT_EQ(int64_t(s.test.size()), o.n_test);
  std::set<std::vector<int32_t>> seen;
  int64_t ops[4] = {0, 0, 0, 0};
  for (const Dataset* d : {&s.train, &s.val, &s.test}) {
    EXPECT_EQ(d->task, "listops");
    EXPECT_EQ(d->vocab_size, VOCAB);
    EXPECT_EQ(d->num_classes, 10);
    for (const Example& e : d->examples) {
      const int64_t n = int64_t(e.tokens.size());
      ASSERT_GT(n, o.min_length);
      ASSERT_LT(n, o.max_length);
      const Parsed p = evaluate(e.tokens);
      ASSERT_GE(p.value, 0) << "malformed: " << listops_to_string(e.tokens);
      ASSERT_EQ(p.value, e.label) << listops_to_string(e.tokens);
      ASSERT_LE(p.depth, o.max_depth);
      ASSERT_GE(p.min_args, 2);
      ASSERT_LE(p.max_args, o.max_args);
      ASSERT_TRUE(seen.insert(e.tokens).second) << "duplicate: " << listops_to_string(e.tokens);
      for (int k = 0; k < 4; ++k) ops[k] += p.operators[k];
    }
  }
  // Operators are drawn uniformly and independently of the tree's shape, so each is a Binomial(M, 1/4)
  // count: stay within 5 standard deviations (false alarm < 1e-6 per operator).
  const double m = double(ops[0] + ops[1] + ops[2] + ops[3]);
  for (int k = 0; k < 4; ++k) EXPECT_NEAR(double(ops[k]), m / 4, 5 * std::sqrt(m * 3 / 16)) << "operator " << k;
}

}  // namespace

TEST(ListOps, IndependentEvaluatorKnownExpressions) {
  // The paper's example (with MIN) and median cases: an even count takes the truncated mean of the middle two.
  EXPECT_EQ(evaluate(listops_from_string("[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]")).value, 5);
  EXPECT_EQ(evaluate(listops_from_string("[MED 1 2 ]")).value, 1);
  EXPECT_EQ(evaluate(listops_from_string("[MED 3 8 0 9 ]")).value, 5);
  EXPECT_EQ(evaluate(listops_from_string("[SM 9 9 3 ]")).value, 1);
  EXPECT_EQ(evaluate(listops_from_string("( ( [MIN 7 ) 4 ) ]")).value, 4);  // LRA's raw form, parentheses dropped
  EXPECT_EQ(evaluate(listops_from_string("[MIN 7 4")).value, -1);            // unclosed
  EXPECT_EQ(listops_from_string("[SM 0 ]"), (std::vector<int32_t>{SM, D0, CLOSE}));
  EXPECT_EQ(listops_to_string({MAX, D0 + 4, D0 + 9, CLOSE}), "[MAX 4 9 ]");
  EXPECT_THROW(listops_from_string("[MEAN 1 2 ]"), std::invalid_argument);
}

TEST(ListOps, ShortWindowLabelsBoundsNoDuplicates) {
  ListOpsOptions o;
  o.n_train = 3000, o.n_val = 300, o.n_test = 300;
  o.min_length = 20, o.max_length = 120;
  o.seed = 7;
  check_splits(generate_listops(o), o);
}

TEST(ListOps, LraWindowAndSmallerDepthAndArgs) {
  ListOpsOptions o;
  o.n_train = 150, o.n_val = 25, o.n_test = 25;  // LRA's length window, fewer examples
  o.seed = 1;
  check_splits(generate_listops(o), o);
  o.max_depth = 4, o.max_args = 3, o.min_length = 10, o.max_length = 40, o.n_train = 500, o.n_val = o.n_test = 50;
  check_splits(generate_listops(o), o);
}

TEST(ListOps, SameSeedSameDataOtherSeedOtherData) {
  ListOpsOptions o;
  o.n_train = 200, o.n_val = 20, o.n_test = 20;
  o.min_length = 30, o.max_length = 200;
  o.seed = 123;
  const Splits a = generate_listops(o), b = generate_listops(o);
  for (size_t i = 0; i < a.train.size(); ++i) {
    ASSERT_EQ(a.train.examples[i].tokens, b.train.examples[i].tokens);
    ASSERT_EQ(a.train.examples[i].label, b.train.examples[i].label);
  }
  ASSERT_EQ(a.test.examples.back().tokens, b.test.examples.back().tokens);
  o.seed = 124;
  const Splits c = generate_listops(o);
  int same = 0;
  for (size_t i = 0; i < a.train.size(); ++i) same += a.train.examples[i].tokens == c.train.examples[i].tokens;
  EXPECT_LT(same, 5);
}

TEST(ListOps, RejectsBadOptionsAndImpossibleRequests) {
  ListOpsOptions o;
  o.min_length = 10, o.max_length = 11;  // both bounds exclusive: empty window
  EXPECT_THROW(generate_listops(o), std::invalid_argument);
  o.min_length = 10, o.max_length = 50, o.max_args = 1;
  EXPECT_THROW(generate_listops(o), std::invalid_argument);
  // Length 2 is impossible (a node has >= 2 arguments, so >= 4 tokens): must give up, not hang.
  o = ListOpsOptions{};
  o.min_length = 1, o.max_length = 3, o.n_train = 1, o.n_val = o.n_test = 0, o.max_stale_draws = 10000;
  EXPECT_THROW(generate_listops(o), std::runtime_error);
}

TEST(ListOps, ReadsLraTsvAndReportsBadLines) {
  data_test::TempFile good("listops_good.tsv", "Source\tTarget\n( ( ( [MAX 2 ) 9 ) ] )\t9\n[SM 4 8 ]\t2\n");
  const Dataset d = read_listops_tsv(good.path);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d.examples[0].tokens, (std::vector<int32_t>{MAX, D0 + 2, D0 + 9, CLOSE}));
  EXPECT_EQ(d.examples[1].label, 2);
  data_test::TempFile bad_word("listops_word.tsv", "Source\tTarget\n[SM 4 8 ]\t2\n[AVG 4 8 ]\t6\n");
  data_test::expect_data_error([&] { read_listops_tsv(bad_word.path); }, bad_word.path, 3, "unknown ListOps word '[AVG'");
  data_test::TempFile bad_label("listops_label.tsv", "[SM 4 8 ]\t12\n");
  data_test::expect_data_error([&] { read_listops_tsv(bad_label.path); }, bad_label.path, 1, "label '12'");
  data_test::TempFile no_tab("listops_tab.tsv", "[SM 4 8 ] 2\n");
  data_test::expect_data_error([&] { read_listops_tsv(no_tab.path); }, no_tab.path, 1, "two tab-separated fields");
}
