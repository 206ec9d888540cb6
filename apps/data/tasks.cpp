#include "apps/data/tasks.h"

#include <sys/stat.h>

#include <cerrno>

#include <algorithm>
#include <stdexcept>

#include "apps/data/idx.h"
#include "apps/data/listops.h"
#include "apps/data/pathfinder.h"
#include "apps/data/rng.h"
#include "apps/data/text.h"

namespace longattn::data {
namespace {

// Every split gets the largest vocab and class count found, so a model built for one fits all.
void harmonise(Splits& s) {
  int32_t vocab = std::max({s.train.vocab_size, s.val.vocab_size, s.test.vocab_size});
  int32_t classes = std::max({s.train.num_classes, s.val.num_classes, s.test.num_classes});
  for (Dataset* d : {&s.train, &s.val, &s.test}) d->vocab_size = vocab, d->num_classes = classes;
}

Splits detect_task(Options& o) {
  const int64_t length = o.get_int("length", 64), classes = o.get_int("classes", 4), noise = o.get_int("noise", 16);
  const int64_t counts[3] = {o.get_int("n_train", 2000), o.get_int("n_val", 200), o.get_int("n_test", 200)};
  Rng rng(uint64_t(o.get_int("seed", 0)));
  if (length < 2 || classes < 2 || noise < 1) throw std::invalid_argument("detect: need length >= 2, classes >= 2, noise >= 1");
  Dataset proto;
  proto.task = "detect";
  proto.vocab_size = int32_t(kFirstTaskToken + noise + classes);
  proto.num_classes = int32_t(classes);
  Splits s{proto, proto, proto};
  Dataset* splits[3] = {&s.train, &s.val, &s.test};
  for (int k = 0; k < 3; ++k)
    for (int64_t i = 0; i < counts[k]; ++i) {
      Example e;
      e.label = int32_t(randint(rng, 0, classes - 1));
      e.tokens.resize(size_t(length));
      for (auto& t : e.tokens) t = int32_t(kFirstTaskToken + randint(rng, 0, noise - 1));
      e.tokens[size_t(randint(rng, 0, length - 1))] = int32_t(kFirstTaskToken + noise + e.label);
      splits[k]->examples.push_back(std::move(e));
    }
  return s;
}

Splits text_task(Options& o, bool retrieval) {
  TextOptions t;
  t.max_length = o.get_int("max_length", retrieval ? 4000 : 4000);
  const std::string train = o.get("train", ""), val = o.get("val", ""), test = o.get("test", "");
  const std::string name = retrieval ? "retrieval" : "text";
  if (train.empty() || val.empty() || test.empty())
    throw std::invalid_argument(name + ": give the files as train=PATH val=PATH test=PATH");
  auto read = [&](const std::string& p) { return retrieval ? read_retrieval_tsv(p, t) : read_text_file(p, t); };
  return Splits{read(train), read(val), read(test)};
}

}  // namespace

const char* task_names() { return "listops, pathfinder, pathx, image, text, retrieval, files, detect"; }

Splits load_task(const std::string& name, Options& o) {
  Splits s;
  if (name == "listops") {
    ListOpsOptions l;
    l.n_train = o.get_int("n_train", l.n_train);
    l.n_val = o.get_int("n_val", l.n_val);
    l.n_test = o.get_int("n_test", l.n_test);
    l.min_length = o.get_int("min_length", l.min_length);
    l.max_length = o.get_int("max_length", l.max_length);
    l.max_depth = int(o.get_int("max_depth", l.max_depth));
    l.max_args = int(o.get_int("max_args", l.max_args));
    l.seed = uint64_t(o.get_int("seed", 0));
    o.check_all_used("task listops");
    s = generate_listops(l);
  } else if (name == "pathfinder" || name == "pathx") {
    PathfinderOptions p;
    p.size = int(o.get_int("size", name == "pathx" ? 128 : 32));
    p.distractors = int(o.get_int("distractors", -1));
    p.levels = int(o.get_int("levels", 256));
    p.n_train = o.get_int("n_train", p.n_train);
    p.n_val = o.get_int("n_val", p.n_val);
    p.n_test = o.get_int("n_test", p.n_test);
    p.seed = uint64_t(o.get_int("seed", 0));
    o.check_all_used("task " + name);
    s = generate_pathfinder(p);
  } else if (name == "image") {
    ImageOptions io;
    io.levels = int(o.get_int("levels", 256));
    const std::string dir = o.get("dir", kFashionMnistDir);
    const int64_t n_val = o.get_int("n_val", 5000);
    o.check_all_used("task image");
    s = load_idx_folder(dir, n_val, io);
  } else if (name == "text" || name == "retrieval") {
    s = text_task(o, name == "retrieval");
    o.check_all_used("task " + name);
  } else if (name == "files") {
    const std::string dir = o.get("dir", "");
    o.check_all_used("task files");
    if (dir.empty()) throw std::invalid_argument("files: give the folder as dir=PATH (it holds train.tsv, val.tsv, test.tsv)");
    s = Splits{read_dataset(dir + "/train.tsv"), read_dataset(dir + "/val.tsv"), read_dataset(dir + "/test.tsv")};
  } else if (name == "detect") {
    s = detect_task(o);
    o.check_all_used("task detect");
  } else {
    throw std::invalid_argument("unknown task '" + name + "'; known tasks: " + task_names());
  }
  harmonise(s);
  return s;
}

void write_splits(const Splits& s, const std::string& dir) {
  if (mkdir(dir.c_str(), 0777) != 0 && errno != EEXIST) throw std::runtime_error("cannot create folder " + dir);
  write_dataset(s.train, dir + "/train.tsv");
  write_dataset(s.val, dir + "/val.tsv");
  write_dataset(s.test, dir + "/test.tsv");
}

}  // namespace longattn::data
