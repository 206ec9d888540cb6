#include "apps/data/pathfinder.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace longattn::data {
namespace {

// Geometry, in pixels of arc length (docs/pathfinder.md explains the choices).
constexpr double kStep = 0.5;         // curve sample spacing: consecutive samples land on 8-adjacent pixels
constexpr double kDash = 2.0;         // lit arc length of a dash
constexpr double kGap = 1.5;          // dark arc length between dashes: lit samples stay <= 2.0 apart
constexpr double kTurnJitter = 0.05;  // change of the turn rate per sample (radians)
constexpr double kTurnMemory = 0.9;   // the turn rate decays toward 0, so long curves bend without coiling
constexpr double kMaxTurn = 0.12;     // |turn| per sample: radius of curvature >= kStep / kMaxTurn ~ 4 px
constexpr int kSeparation = 3;        // pixels of different curves are at Chebyshev distance >= 3
constexpr int kCircleRadius = 2;      // circles are discs of radius 2 (13 pixels)
constexpr int kBorder = 2;            // curve pixels stay this far inside, so circles fit
constexpr int kTriesPerCurve = 200;
constexpr int kTriesPerImage = 1000;

struct Pixel {
  int r, c;
};

class Canvas {
 public:
  explicit Canvas(int n) : n_(n), pixels_(size_t(n) * n, 0), owner_(size_t(n) * n, 0) {}

  bool inside(Pixel p, int margin) const { return p.r >= margin && p.c >= margin && p.r < n_ - margin && p.c < n_ - margin; }

  // True when no pixel of another curve lies within Chebyshev distance kSeparation - 1 of p.
  bool clear_of_others(Pixel p, int id) const {
    const int k = kSeparation - 1;
    for (int r = std::max(0, p.r - k); r <= std::min(n_ - 1, p.r + k); ++r)
      for (int c = std::max(0, p.c - k); c <= std::min(n_ - 1, p.c + k); ++c) {
        const int16_t o = owner_[size_t(r) * n_ + c];
        if (o != 0 && o != id) return false;
      }
    return true;
  }

  void own(Pixel p, int id) { owner_[size_t(p.r) * n_ + p.c] = int16_t(id); }
  void light(Pixel p, uint8_t v) { pixels_[size_t(p.r) * n_ + p.c] = v; }
  int size() const { return n_; }
  std::vector<uint8_t>& pixels() { return pixels_; }
  std::vector<int16_t>& owner() { return owner_; }

 private:
  int n_;
  std::vector<uint8_t> pixels_;
  std::vector<int16_t> owner_;
};

std::vector<Pixel> disc(Pixel centre) {
  std::vector<Pixel> out;
  for (int dr = -kCircleRadius; dr <= kCircleRadius; ++dr)
    for (int dc = -kCircleRadius; dc <= kCircleRadius; ++dc)
      if (dr * dr + dc * dc <= kCircleRadius * kCircleRadius) out.push_back({centre.r + dr, centre.c + dc});
  return out;
}

// Tries to add curve `id` with circles at its start and/or end; returns false (canvas unchanged)
// when the drawn curve leaves the image or comes too close to another curve.
bool try_curve(Canvas& cv, int id, double length, bool circle_start, bool circle_end, Rng& rng, Pixel ends[2]) {
  const int n = cv.size();
  const int steps = int(std::lround(length / kStep));
  double y = uniform(rng, kBorder, n - 1 - kBorder), x = uniform(rng, kBorder, n - 1 - kBorder);
  double theta = uniform(rng, 0, 2 * M_PI), turn = 0;
  const double phase = uniform(rng, 0, kDash + kGap);
  const uint8_t intensity = uint8_t(randint(rng, 170, 255));

  std::vector<Pixel> samples;
  std::vector<bool> lit;
  samples.reserve(size_t(steps) + 1);
  for (int k = 0; k <= steps; ++k) {
    if (k > 0) {
      turn = std::clamp(kTurnMemory * turn + uniform(rng, -kTurnJitter, kTurnJitter), -kMaxTurn, kMaxTurn);
      theta += turn;
      x += kStep * std::cos(theta);
      y += kStep * std::sin(theta);
    }
    const Pixel p{int(std::lround(y)), int(std::lround(x))};
    if (!cv.inside(p, kBorder) || !cv.clear_of_others(p, id)) return false;
    samples.push_back(p);
    lit.push_back(std::fmod(k * kStep + phase, kDash + kGap) < kDash);
  }
  std::vector<Pixel> circles;
  if (circle_start)
    for (Pixel p : disc(samples.front())) circles.push_back(p);
  if (circle_end)
    for (Pixel p : disc(samples.back())) circles.push_back(p);
  for (Pixel p : circles)
    if (!cv.inside(p, 0) || !cv.clear_of_others(p, id)) return false;
  for (size_t k = 0; k < samples.size(); ++k) {
    cv.own(samples[k], id);
    if (lit[k]) cv.light(samples[k], intensity);
  }
  for (Pixel p : circles) {
    cv.own(p, id);
    cv.light(p, 255);
  }
  ends[0] = samples.front();
  ends[1] = samples.back();
  return true;
}

int default_distractors(int size) { return std::max(2, int(std::lround(2.0 * size * size / (32.0 * 32.0) / 4.0))); }

void check_options(const PathfinderOptions& o) {
  auto bad = [](const std::string& m) { throw std::invalid_argument("pathfinder: " + m); };
  if (o.size < 16 || o.size > 1024) bad("size must be in [16, 1024], got " + std::to_string(o.size));
  if (!(o.min_length > 0 && o.min_length <= o.max_length && o.max_length <= 3))
    bad("need 0 < min_length <= max_length <= 3 (fractions of the size)");
  if (o.levels < 2 || o.levels > 256) bad("levels must be in [2, 256], got " + std::to_string(o.levels));
  if (o.n_train < 0 || o.n_val < 0 || o.n_test < 0) bad("split sizes must be non-negative");
}

}  // namespace

PathfinderImage draw_pathfinder(const PathfinderOptions& opt, bool connected, Rng& rng) {
  check_options(opt);
  const int n = opt.size;
  const int distractors = opt.distractors >= 0 ? opt.distractors : default_distractors(n);
  for (int attempt = 0; attempt < kTriesPerImage; ++attempt) {
    Canvas cv(n);
    PathfinderImage img;
    bool ok = true;
    // Curve 1 carries circle A (and circle B when connected); curve 2 carries circle B otherwise.
    for (int id = 1; ok && id <= 2 + distractors; ++id) {
      const bool circle_start = id <= 2 && (id == 1 || !connected);
      const bool circle_end = id == 1 && connected;
      bool placed = false;
      for (int t = 0; t < kTriesPerCurve && !placed; ++t) {
        const double length = n * uniform(rng, opt.min_length, opt.max_length);
        Pixel ends[2];
        placed = try_curve(cv, id, length, circle_start, circle_end, rng, ends);
        if (placed && id == 1) {
          img.circle_row[0] = ends[0].r, img.circle_col[0] = ends[0].c;
          if (connected) img.circle_row[1] = ends[1].r, img.circle_col[1] = ends[1].c;
        }
        if (placed && id == 2 && !connected) img.circle_row[1] = ends[0].r, img.circle_col[1] = ends[0].c;
      }
      ok = placed;
    }
    if (!ok) continue;
    img.size = n;
    img.pixels = std::move(cv.pixels());
    img.owner = std::move(cv.owner());
    img.connected = connected;
    return img;
  }
  throw std::runtime_error("pathfinder: could not place " + std::to_string(2 + distractors) + " curves in a " +
                           std::to_string(n) + "x" + std::to_string(n) + " image after " +
                           std::to_string(kTriesPerImage) + " attempts; use fewer distractors or shorter curves");
}

Splits generate_pathfinder(const PathfinderOptions& opt) {
  check_options(opt);
  Rng rng(opt.seed);
  Dataset proto;
  proto.task = "pathfinder";
  proto.vocab_size = kFirstTaskToken + opt.levels;
  proto.num_classes = 2;
  proto.height = proto.width = opt.size;
  Splits s{proto, proto, proto};
  for (Dataset* d : {&s.train, &s.val, &s.test}) {
    const int64_t count = d == &s.train ? opt.n_train : d == &s.val ? opt.n_val : opt.n_test;
    d->examples.reserve(size_t(count));
    for (int64_t i = 0; i < count; ++i) {
      const bool connected = (rng() >> 63) != 0;
      PathfinderImage img = draw_pathfinder(opt, connected, rng);
      Example e;
      e.label = connected ? 1 : 0;
      e.tokens.resize(img.pixels.size());
      for (size_t j = 0; j < img.pixels.size(); ++j) e.tokens[j] = kFirstTaskToken + int32_t(img.pixels[j]) * opt.levels / 256;
      d->examples.push_back(std::move(e));
    }
  }
  return s;
}

}  // namespace longattn::data
