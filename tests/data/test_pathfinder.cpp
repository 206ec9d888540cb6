#include <gtest/gtest.h>

#include <vector>

#include "apps/data/pathfinder.h"

using namespace longattn::data;

namespace {

// Breadth-first flood fill over the pixels for which lit(r, c) holds, joining two pixels when their
// Chebyshev distance is at most `reach`. Returns whether (r1, c1) reaches (r0, c0).
template <class Lit>
bool flood_reaches(int n, int r0, int c0, int r1, int c1, int reach, Lit lit) {
  if (!lit(r0, c0) || !lit(r1, c1)) return false;
  std::vector<uint8_t> seen(size_t(n) * n, 0);
  std::vector<std::pair<int, int>> queue{{r0, c0}};
  seen[size_t(r0) * n + c0] = 1;
  for (size_t head = 0; head < queue.size(); ++head) {
    auto [r, c] = queue[head];
    if (r == r1 && c == c1) return true;
    for (int dr = -reach; dr <= reach; ++dr)
      for (int dc = -reach; dc <= reach; ++dc) {
        const int rr = r + dr, cc = c + dc;
        if (rr < 0 || cc < 0 || rr >= n || cc >= n || seen[size_t(rr) * n + cc] || !lit(rr, cc)) continue;
        seen[size_t(rr) * n + cc] = 1;
        queue.push_back({rr, cc});
      }
  }
  return false;
}

// What the test checks (docs/pathfinder.md, "The label"):
//  1. on the image alone: the circles are connected through lit pixels joined up to 2 pixels apart
//     (the widest dash gap) exactly when the label says so;
//  2. on the undashed strokes the generator keeps: 8-connectivity gives the same answer;
//  3. the circle centres are lit at full intensity, and gaps of 1 (plain 8-connectivity on the image)
//     do not connect dashed circles, i.e. the dashes really are dashed.
void check_image(const PathfinderImage& img, int64_t& dashes_matter) {
  const int n = img.size;
  const int r0 = img.circle_row[0], c0 = img.circle_col[0], r1 = img.circle_row[1], c1 = img.circle_col[1];
  ASSERT_EQ(img.pixels[size_t(r0) * n + c0], 255);
  ASSERT_EQ(img.pixels[size_t(r1) * n + c1], 255);
  ASSERT_FALSE(r0 == r1 && c0 == c1);
  auto lit = [&](int r, int c) { return img.pixels[size_t(r) * n + c] > 0; };
  auto stroke = [&](int r, int c) { return img.owner[size_t(r) * n + c] > 0; };
  EXPECT_EQ(flood_reaches(n, r0, c0, r1, c1, 2, lit), img.connected);
  EXPECT_EQ(flood_reaches(n, r0, c0, r1, c1, 1, stroke), img.connected);
  if (img.connected && !flood_reaches(n, r0, c0, r1, c1, 1, lit)) ++dashes_matter;
}

}  // namespace

TEST(Pathfinder, FloodFillAgreesWithTheLabel32) {
  PathfinderOptions o;
  Rng rng(11);
  int64_t dashes_matter = 0, positives = 0;
  for (int i = 0; i < 300; ++i) {
    const bool connected = i % 2 == 0;
    const PathfinderImage img = draw_pathfinder(o, connected, rng);
    ASSERT_EQ(img.size, 32);
    check_image(img, dashes_matter);
    positives += connected;
  }
  // Almost every positive path has a gap; a flood fill of reach 1 must fail on most of them.
  EXPECT_GT(dashes_matter, positives * 9 / 10);
}

TEST(Pathfinder, FloodFillAgreesWithTheLabelPathX) {
  PathfinderOptions o;
  o.size = 128;
  Rng rng(5);
  int64_t dashes_matter = 0;
  for (int i = 0; i < 12; ++i) check_image(draw_pathfinder(o, i % 2 == 1, rng), dashes_matter);
}

TEST(Pathfinder, DatasetBalancedSeededShaped) {
  PathfinderOptions o;
  o.n_train = 400, o.n_val = 50, o.n_test = 50, o.seed = 3, o.levels = 16;
  const Splits a = generate_pathfinder(o), b = generate_pathfinder(o);
  ASSERT_EQ(a.train.size(), 400u);
  ASSERT_EQ(a.val.size(), 50u);
  EXPECT_EQ(a.train.height, 32);
  EXPECT_EQ(a.train.width, 32);
  EXPECT_EQ(a.train.vocab_size, 3 + 16);
  int positives = 0;
  for (size_t i = 0; i < a.train.size(); ++i) {
    ASSERT_EQ(a.train.examples[i].tokens, b.train.examples[i].tokens);
    ASSERT_EQ(a.train.examples[i].label, b.train.examples[i].label);
    positives += a.train.examples[i].label;
  }
  EXPECT_NO_THROW(validate(a.train));
  // Fair coin labels: Binomial(400, 1/2) has sd 10; 5 sd bounds.
  EXPECT_NEAR(positives, 200, 50);
  o.seed = 4;
  EXPECT_NE(generate_pathfinder(o).train.examples[0].tokens, a.train.examples[0].tokens);
}

TEST(Pathfinder, RejectsBadOptions) {
  PathfinderOptions o;
  o.size = 8;
  EXPECT_THROW(generate_pathfinder(o), std::invalid_argument);
  o = PathfinderOptions{};
  o.distractors = 200;  // cannot fit: must say so, not loop
  o.n_train = 1, o.n_val = o.n_test = 0;
  EXPECT_THROW(generate_pathfinder(o), std::runtime_error);
}
