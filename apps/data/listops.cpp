#include "apps/data/listops.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <unordered_set>

#include "apps/data/errors.h"
#include "apps/data/rng.h"

namespace longattn::data {
namespace {

using namespace listops;

constexpr double kOperatorProbability = 0.25;  // LRA's VALUE_P: r > 0.25 gives a leaf
const int32_t kOperators[4] = {kMin, kMax, kMed, kSumMod};

int apply(int32_t op, std::vector<int>& args) {
  switch (op) {
    case kMin: return *std::min_element(args.begin(), args.end());
    case kMax: return *std::max_element(args.begin(), args.end());
    case kSumMod: {
      int s = 0;
      for (int a : args) s += a;
      return s % 10;
    }
    default: {  // kMed: int(np.median(args)); the values are non-negative, so truncation is floor
      std::sort(args.begin(), args.end());
      const size_t n = args.size();
      return n % 2 ? args[n / 2] : (args[n / 2 - 1] + args[n / 2]) / 2;
    }
  }
}

// Generates one expression into `out` the way LRA's generate_tree does, returning its value, or -1
// as soon as it reaches `limit` tokens: such a tree fails the length window whatever follows, so
// stopping early changes no accepted expression's probability, only saves time.
class TreeGenerator {
 public:
  TreeGenerator(Rng& rng, int max_depth, int max_args, int64_t limit)
      : rng_(rng), max_depth_(max_depth), max_args_(max_args), limit_(limit) {}

  int generate(int depth, std::vector<int32_t>& out) {
    const double r = depth < max_depth_ ? uniform01(rng_) : 1.0;
    if (r > kOperatorProbability) {
      const int v = int(randint(rng_, 0, 9));
      out.push_back(kDigit0 + v);
      return int64_t(out.size()) >= limit_ ? -1 : v;
    }
    const int64_t nargs = randint(rng_, 2, max_args_);
    // The operator is drawn after the arguments (its slot is filled in below); the order of independent
    // draws does not change the distribution.
    const size_t op_pos = out.size();
    out.push_back(kMin);
    std::vector<int> args;
    args.reserve(size_t(nargs));
    for (int64_t i = 0; i < nargs; ++i) {
      const int v = generate(depth + 1, out);
      if (v < 0) return -1;
      args.push_back(v);
    }
    const int32_t op = kOperators[randint(rng_, 0, 3)];
    out[op_pos] = op;
    out.push_back(kClose);
    if (int64_t(out.size()) >= limit_) return -1;
    return apply(op, args);
  }

 private:
  Rng& rng_;
  int max_depth_, max_args_;
  int64_t limit_;
};

void check_options(const ListOpsOptions& o) {
  auto bad = [](const std::string& m) { throw std::invalid_argument("listops: " + m); };
  if (o.max_depth < 1) bad("max_depth must be at least 1, got " + std::to_string(o.max_depth));
  if (o.max_args < 2) bad("max_args must be at least 2, got " + std::to_string(o.max_args));
  if (o.min_length < 0 || o.max_length <= o.min_length + 1)
    bad("the length window (min_length, max_length) = (" + std::to_string(o.min_length) + ", " +
        std::to_string(o.max_length) + ") is empty (both bounds are exclusive)");
  if (o.n_train < 0 || o.n_val < 0 || o.n_test < 0) bad("split sizes must be non-negative");
}

Dataset empty_split() {
  Dataset d;
  d.task = "listops";
  d.vocab_size = kVocabSize;
  d.num_classes = kNumClasses;
  return d;
}

const char* word_of(int32_t t) {
  static const char* const digits[10] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
  if (t >= kDigit0 && t < kDigit0 + 10) return digits[t - kDigit0];
  switch (t) {
    case kMin: return "[MIN";
    case kMax: return "[MAX";
    case kMed: return "[MED";
    case kSumMod: return "[SM";
    case kClose: return "]";
    default: throw std::invalid_argument("listops: token id " + std::to_string(t) + " is not in the ListOps vocabulary");
  }
}

}  // namespace

Splits generate_listops(const ListOpsOptions& opt) {
  check_options(opt);
  Rng rng(opt.seed);
  Splits s{empty_split(), empty_split(), empty_split()};
  const int64_t wanted = opt.n_train + opt.n_val + opt.n_test;
  std::unordered_set<std::string> seen;  // token ids fit a byte, so a string is a compact key
  std::vector<int32_t> tokens;
  int64_t stale = 0, made = 0;
  while (made < wanted) {
    tokens.clear();
    TreeGenerator gen(rng, opt.max_depth, opt.max_args, opt.max_length);
    const int value = gen.generate(1, tokens);
    const int64_t n = int64_t(tokens.size());
    bool fresh = false;
    if (value >= 0 && n > opt.min_length && n < opt.max_length)
      fresh = seen.emplace(tokens.begin(), tokens.end()).second;
    if (!fresh) {
      if (++stale >= opt.max_stale_draws)
        throw std::runtime_error("listops: found only " + std::to_string(made) + " of " + std::to_string(wanted) +
                                 " distinct expressions with " + std::to_string(opt.min_length) + " < length < " +
                                 std::to_string(opt.max_length) + " after " + std::to_string(stale) +
                                 " fruitless draws in a row; widen the window or ask for fewer");
      continue;
    }
    stale = 0;
    Dataset& d = made < opt.n_train ? s.train : made < opt.n_train + opt.n_val ? s.val : s.test;
    d.examples.push_back(Example{tokens, {}, value});
    ++made;
  }
  return s;
}

std::string listops_to_string(const std::vector<int32_t>& tokens) {
  std::string s;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (i) s += ' ';
    s += word_of(tokens[i]);
  }
  return s;
}

std::vector<int32_t> listops_from_string(const std::string& text) {
  std::string cleaned = text;
  std::replace(cleaned.begin(), cleaned.end(), '(', ' ');
  std::replace(cleaned.begin(), cleaned.end(), ')', ' ');
  std::istringstream is(cleaned);
  std::vector<int32_t> out;
  std::string w;
  while (is >> w) {
    if (w.size() == 1 && w[0] >= '0' && w[0] <= '9') out.push_back(kDigit0 + (w[0] - '0'));
    else if (w == "[MIN") out.push_back(kMin);
    else if (w == "[MAX") out.push_back(kMax);
    else if (w == "[MED") out.push_back(kMed);
    else if (w == "[SM") out.push_back(kSumMod);
    else if (w == "]") out.push_back(kClose);
    else throw std::invalid_argument("unknown ListOps word '" + w + "' (expected [MIN [MAX [MED [SM ] or a digit)");
  }
  return out;
}

Dataset read_listops_tsv(const std::string& path) {
  std::ifstream is(path, std::ios::binary);
  if (!is) throw DataError(path, 0, "cannot open for reading");
  Dataset d = empty_split();
  std::string line;
  int64_t lineno = 0;
  while (std::getline(is, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (lineno == 1 && line == "Source\tTarget") continue;
    const auto tab = line.find('\t');
    if (tab == std::string::npos || line.find('\t', tab + 1) != std::string::npos)
      throw DataError(path, lineno, "expected two tab-separated fields: expression, label");
    const std::string label = line.substr(tab + 1);
    if (label.size() != 1 || label[0] < '0' || label[0] > '9')
      throw DataError(path, lineno, "label '" + label + "' is not a digit 0-9");
    Example e;
    e.label = label[0] - '0';
    try {
      e.tokens = listops_from_string(line.substr(0, tab));
    } catch (const std::invalid_argument& err) {
      throw DataError(path, lineno, err.what());
    }
    if (e.tokens.empty()) throw DataError(path, lineno, "empty expression");
    d.examples.push_back(std::move(e));
  }
  if (d.examples.empty()) throw DataError(path, 0, "no examples");
  return d;
}

}  // namespace longattn::data
