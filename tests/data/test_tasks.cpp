#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>

#include "apps/data/order.h"
#include "apps/data/tasks.h"

using namespace longattn::data;

TEST(EpochOrder, EpochsArePermutationsAndAFreshObjectResumesExactly) {
  EpochOrder a(103, 10, 9);
  EXPECT_EQ(a.steps_per_epoch(), 10);  // 103 / 10, the partial batch dropped
  std::vector<std::vector<size_t>> seen;
  for (int64_t s = 0; s < 35; ++s) seen.push_back(a.batch(s));
  for (int epoch = 0; epoch < 3; ++epoch) {
    std::set<size_t> distinct;
    for (int k = 0; k < 10; ++k)
      for (size_t i : seen[size_t(epoch * 10 + k)]) {
        EXPECT_LT(i, 103u);
        distinct.insert(i);
      }
    EXPECT_EQ(distinct.size(), 100u) << "epoch " << epoch;
  }
  EXPECT_NE(seen[0], seen[10]);  // epochs are reshuffled
  EpochOrder b(103, 10, 9);      // a resumed run asks from step 23 on
  for (int64_t s = 23; s < 35; ++s) EXPECT_EQ(b.batch(s), seen[size_t(s)]);
  EpochOrder small(3, 8, 1);  // fewer examples than a batch: every step is the whole split
  EXPECT_EQ(small.batch(5).size(), 3u);
}

TEST(EpochOrder, BucketingKeepsEpochsWholeAndPadsLess) {
  const size_t n = 1000;
  const int64_t batch = 10;
  std::vector<int64_t> len(n);
  for (size_t i = 0; i < n; ++i) len[i] = int64_t((i * 7919) % 997) + 1;  // lengths unrelated to the index
  EpochOrder plain(n, batch, 4), bucketed(n, batch, 4, 8, len);
  EXPECT_EQ(plain.batch(0), EpochOrder(n, batch, 4, 1, len).batch(0));  // bucket 1 is the plain order
  int64_t padded_plain = 0, padded_bucketed = 0;
  std::vector<std::vector<size_t>> seen;
  for (int64_t s = 0; s < 2 * plain.steps_per_epoch(); ++s) {
    seen.push_back(bucketed.batch(s));
    auto longest = [&](const std::vector<size_t>& b) {
      int64_t m = 0;
      for (size_t i : b) m = std::max(m, len[i]);
      return m * int64_t(b.size());
    };
    padded_plain += longest(plain.batch(s));
    padded_bucketed += longest(seen.back());
  }
  for (int epoch = 0; epoch < 2; ++epoch) {  // every example once per epoch, in full batches
    std::set<size_t> distinct;
    for (int64_t k = 0; k < 100; ++k) {
      EXPECT_EQ(seen[size_t(epoch * 100 + k)].size(), size_t(batch));
      for (size_t i : seen[size_t(epoch * 100 + k)]) distinct.insert(i);
    }
    EXPECT_EQ(distinct.size(), n) << "epoch " << epoch;
  }
  // A pool of 80 sorted lengths cut into 8 batches: each batch spans about 1/8 of the range, so the
  // padded total falls far below random batches' (whose maximum of 10 is near the top of the range).
  EXPECT_LT(double(padded_bucketed), 0.75 * double(padded_plain));
  // Batches are not visited in length order: some step's longest exceeds the next step's.
  int descents = 0;
  for (size_t s = 1; s < 100; ++s) descents += len[seen[s].back()] < len[seen[s - 1].back()];
  EXPECT_GT(descents, 20);
  EpochOrder resumed(n, batch, 4, 8, len);  // a fresh object from step 137 on: the same batches
  for (int64_t s = 137; s < 200; ++s) EXPECT_EQ(resumed.batch(s), seen[size_t(s)]);
  EXPECT_THROW(EpochOrder(n, batch, 4, 0, len), std::invalid_argument);
  EXPECT_THROW(EpochOrder(n, batch, 4, 8, std::vector<int64_t>(3)), std::invalid_argument);
}

TEST(Tasks, DetectIsLabelledByItsMarker) {
  Options o = Options::parse("length=20,classes=3,noise=5,n_train=50,n_val=5,n_test=5,seed=2");
  const Splits s = load_task("detect", o);
  ASSERT_EQ(s.train.size(), 50u);
  EXPECT_EQ(s.train.vocab_size, 3 + 5 + 3);
  for (const auto& e : s.train.examples) {
    int markers = 0, label = -1;
    for (int32_t t : e.tokens)
      if (t >= 8) ++markers, label = t - 8;
    EXPECT_EQ(markers, 1);
    EXPECT_EQ(label, e.label);
  }
}

TEST(Tasks, UnknownNamesAndOptionsListTheKnownOnes) {
  Options o;
  try {
    load_task("listopz", o);
    ADD_FAILURE();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("known tasks: listops, pathfinder"), std::string::npos) << e.what();
  }
  Options bad = Options::parse("n_train=10,lenght=5");
  try {
    load_task("detect", bad);
    ADD_FAILURE();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("unknown option(s) lenght"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("length"), std::string::npos) << e.what();
  }
  Options notint = Options::parse("n_train=ten");
  EXPECT_THROW(load_task("detect", notint), std::invalid_argument);
}

TEST(Tasks, WrittenSplitsReadBackAsTheFilesTask) {
  Options o = Options::parse("n_train=30 n_val=5 n_test=5 min_length=10 max_length=40 seed=4");
  const Splits s = load_task("listops", o);
  const std::string dir = ::testing::TempDir() + "longattn_splits_" + std::to_string(::getpid());
  write_splits(s, dir);
  Options f = Options::parse("dir=" + dir);
  const Splits r = load_task("files", f);
  ASSERT_EQ(r.train.size(), 30u);
  for (size_t i = 0; i < 30; ++i) EXPECT_EQ(r.train.examples[i].tokens, s.train.examples[i].tokens);
  EXPECT_EQ(r.test.examples[4].label, s.test.examples[4].label);
  for (const char* f : {"/train.tsv", "/val.tsv", "/test.tsv"}) std::remove((dir + f).c_str());
  rmdir(dir.c_str());
}
