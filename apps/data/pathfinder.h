// Pathfinder (Linsley et al. 2018, as used by LRA): is there a dashed path joining the two circles?
// Our own generator; the rules are in docs/pathfinder.md. In short: every image holds two circles
// and 2 + distractors dashed curves that never come within 2 pixels (Chebyshev) of one another. A
// positive image has one curve with a circle at each end; a negative one has two curves with one
// circle each. The label is therefore true by construction, and a flood fill over the image's lit
// pixels, joining pixels up to 2 apart (the widest dash gap), recovers it (tests/data/test_pathfinder.cpp).
#pragma once

#include <cstdint>
#include <vector>

#include "apps/data/dataset.h"
#include "apps/data/rng.h"

namespace longattn::data {

struct PathfinderOptions {
  int size = 32;               // images are size x size (128 for Path-X); at least 16
  int distractors = -1;        // curves without circles; -1: 2 at size 32, growing with the area
  double min_length = 0.45;    // curve arc length, as a fraction of size, drawn uniformly in [min, max]
  double max_length = 0.70;
  int levels = 256;            // quantise intensities to this many levels; vocab = 3 + levels
  int64_t n_train = 8000, n_val = 1000, n_test = 1000;
  uint64_t seed = 0;
};

// One image with what the generator knows about it.
struct PathfinderImage {
  int size = 0;
  std::vector<uint8_t> pixels;   // size*size intensities, row-major; 0 is background
  std::vector<int16_t> owner;    // size*size: the curve (1, 2, ...) whose undashed stroke or circle covers the pixel, 0 none
  int circle_row[2] = {0, 0};    // circle centres
  int circle_col[2] = {0, 0};
  bool connected = false;
};

// Draws one image with the given label.
PathfinderImage draw_pathfinder(const PathfinderOptions& opt, bool connected, Rng& rng);

// Balanced labels (each example's label is a fair coin); tokens are quantised intensities + 3,
// height = width = size.
Splits generate_pathfinder(const PathfinderOptions& opt);

}  // namespace longattn::data
