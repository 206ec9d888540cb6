#include "apps/train/trainer.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <sstream>

#include "apps/data/order.h"
#include "apps/train/checkpoint_file.h"
#include "apps/train/distributed.h"
#include "apps/train/progress.h"
#include "kernels/common/cpu_features.h"

namespace longattn::train {
namespace {

using Clock = std::chrono::steady_clock;

struct TensorBatch {
  torch::Tensor tokens, mask, tokens2, mask2, labels;
  int64_t real_tokens = 0;
};

TensorBatch to_tensors(const data::Batch& b, const torch::Device& device) {
  TensorBatch t;
  auto ids = [](const std::vector<int32_t>& v, int64_t rows, int64_t cols) {
    return torch::from_blob(const_cast<int32_t*>(v.data()), {rows, cols}, torch::kInt32).to(torch::kLong);
  };
  auto mask = [](const std::vector<uint8_t>& v, int64_t rows, int64_t cols) {
    return torch::from_blob(const_cast<uint8_t*>(v.data()), {rows, cols}, torch::kUInt8).to(torch::kBool);
  };
  t.tokens = ids(b.tokens, b.batch, b.length);
  t.mask = mask(b.mask, b.batch, b.length);
  if (!b.tokens2.empty()) {
    t.tokens2 = ids(b.tokens2, b.batch, b.length2);
    t.mask2 = mask(b.mask2, b.batch, b.length2);
  }
  t.labels = torch::from_blob(const_cast<int32_t*>(b.labels.data()), {b.batch}, torch::kInt32).to(torch::kLong);
  t.real_tokens = b.real_tokens;
  if (!device.is_cpu()) {
    for (torch::Tensor* x : {&t.tokens, &t.mask, &t.tokens2, &t.mask2, &t.labels})
      if (x->defined()) *x = x->to(device);
  }
  return t;
}

data::BatchOptions batch_options(const nn::ModelConfig& m) {
  data::BatchOptions o;
  o.prepend_cls = m.pooling == "cls";
  return o;
}

double lr_at(const TrainConfig& c, int64_t step) {  // step counts from 0
  if (c.warmup > 0 && step < c.warmup) return c.lr * double(step + 1) / double(c.warmup);
  const double rest = double(std::max<int64_t>(1, c.steps - c.warmup));
  return c.lr * std::max(0.0, 1.0 - double(step - c.warmup) / rest);
}

// AdamW's moments live where the parameters do; a checkpoint holds them on the CPU.
void move_optimizer_state(torch::optim::AdamW& opt, const torch::Device& device) {
  for (auto& entry : opt.state()) {
    auto& st = static_cast<torch::optim::AdamWParamState&>(*entry.second);
    if (st.exp_avg().defined()) st.exp_avg(st.exp_avg().to(device));
    if (st.exp_avg_sq().defined()) st.exp_avg_sq(st.exp_avg_sq().to(device));
    if (st.max_exp_avg_sq().defined()) st.max_exp_avg_sq(st.max_exp_avg_sq().to(device));
  }
}

std::string serialize_state(nn::Classifier& model, torch::optim::AdamW& opt, int64_t step, double best, const std::string& config) {
  torch::serialize::OutputArchive root, m, o;
  // Checkpoints are device-free: a run on one device resumes or evaluates on another.
  const torch::Device device = model->parameters().front().device();
  const bool moved = !device.is_cpu();
  if (moved) model->to(torch::kCPU), move_optimizer_state(opt, torch::kCPU);
  model->save(m);
  opt.save(o);
  root.write("model", m);
  root.write("optimizer", o);
  root.write("step", torch::tensor(step, torch::kLong));
  root.write("best_val_accuracy", torch::tensor(best, torch::kDouble));
  root.write("model_config", c10::IValue(config));
  auto gen = at::detail::getDefaultCPUGenerator();
  {
    std::lock_guard<std::mutex> lock(gen.mutex());
    root.write("cpu_rng", gen.get_state());
  }
  std::ostringstream os;
  root.save_to(os);  // the archive refers to the tensors: move them back only once it is written
  if (moved) model->to(device), move_optimizer_state(opt, device);
  return os.str();
}

torch::serialize::InputArchive open_archive(const std::string& path) {
  const std::string payload = read_checkpoint_file(path);
  torch::serialize::InputArchive root;
  try {
    root.load_from(payload.data(), payload.size());
  } catch (const c10::Error& e) {
    throw std::runtime_error("checkpoint " + path + ": unreadable torch archive: " + e.what_without_backtrace());
  }
  return root;
}

std::string read_config(torch::serialize::InputArchive& root, const std::string& path) {
  c10::IValue v;
  if (!root.try_read("model_config", v) || !v.isString())
    throw std::runtime_error("checkpoint " + path + ": no model configuration inside");
  return v.toStringRef();
}

void save_checkpoint(const std::string& path, nn::Classifier& model, torch::optim::AdamW& opt, int64_t step, double best) {
  write_checkpoint_file(path, serialize_state(model, opt, step, best, model->config().to_string()));
}

}  // namespace

torch::Device training_device(const std::string& name) {
  c10::optional<torch::Device> d;
  try {
    d = torch::Device(name);
  } catch (const c10::Error&) {
  }
  if (!d) throw std::invalid_argument("--device must name a torch device (cpu, cuda, cuda:1, xpu, mps), got '" + name + "'");
  if (d->is_cpu()) return *d;
  const bool available = d->is_cuda()  ? torch::cuda::is_available() && (!d->has_index() || d->index() < int(torch::cuda::device_count()))
                         : d->is_xpu() ? at::globalContext().hasXPU()
                         : d->is_mps() ? at::globalContext().hasMPS()
                                       : false;
  if (!available)
    throw std::invalid_argument("--device '" + name + "': torch sees no such device in this process" +
                                (d->is_cuda() ? " (torch::cuda::is_available() is " +
                                                    std::string(torch::cuda::is_available() ? "true, with " +
                                                                    std::to_string(torch::cuda::device_count()) + " devices)"
                                                                                            : "false)")
                                              : std::string()) +
                                "; use --device cpu");
  return *d;
}

void fit_model_to_data(nn::ModelConfig& m, const data::Splits& s) {
  m.vocab_size = s.train.vocab_size;
  m.num_classes = s.train.num_classes;
  m.paired = s.train.paired;
  m.height = s.train.height;
  m.width = s.train.width;
  int64_t longest = 0;
  for (const data::Dataset* d : {&s.train, &s.val, &s.test}) longest = std::max(longest, d->max_length());
  m.max_len = longest + (m.pooling == "cls" ? 1 : 0);
}

static std::vector<int64_t> example_lengths(const data::Dataset& ds) {
  std::vector<int64_t> len(ds.size());
  for (size_t i = 0; i < ds.size(); ++i)
    len[i] = int64_t(std::max(ds.examples[i].tokens.size(), ds.examples[i].tokens2.size()));
  return len;
}

EvalResult evaluate(nn::Classifier& model, const data::Dataset& ds, int64_t batch, Distributed* dist) {
  if (batch < 1) throw std::invalid_argument("evaluate: batch must be >= 1, got " + std::to_string(batch));
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  EvalResult r;
  double loss_sum = 0;
  int64_t correct = 0;
  // Batches of similar lengths pad less; the metrics are sums over examples, so the order is free.
  const std::vector<int64_t> len = example_lengths(ds);
  std::vector<size_t> by_length(ds.size());
  std::iota(by_length.begin(), by_length.end(), size_t(0));
  std::stable_sort(by_length.begin(), by_length.end(), [&](size_t x, size_t y) { return len[x] < len[y]; });
  const size_t world = dist ? size_t(dist->world()) : 1, rank = dist ? size_t(dist->rank()) : 0;
  const torch::Device device = model->parameters().front().device();
  for (size_t start = 0, chunk = 0; start < ds.size(); start += size_t(batch), ++chunk) {
    if (chunk % world != rank) continue;  // this rank's share of the batches
    std::vector<size_t> idx(by_length.begin() + long(start), by_length.begin() + long(std::min(ds.size(), start + size_t(batch))));
    auto t = to_tensors(data::make_batch(ds, idx, batch_options(model->config())), device);
    auto logits = model->forward(t.tokens, t.mask, t.tokens2, t.mask2);
    loss_sum += torch::nn::functional::cross_entropy(logits, t.labels,
                                                     torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    correct += logits.argmax(1).eq(t.labels).sum().item<int64_t>();
  }
  if (dist && dist->world() > 1) {
    torch::Tensor sums = torch::tensor({loss_sum, double(correct)}, torch::kDouble);
    dist->all_reduce_sum(sums, "the evaluation all-reduce");
    loss_sum = sums[0].item<double>();
    correct = int64_t(std::llround(sums[1].item<double>()));
  }
  r.examples = int64_t(ds.size());
  if (r.examples > 0) r.loss = loss_sum / double(r.examples), r.accuracy = double(correct) / double(r.examples);
  model->train(was_training);
  return r;
}

nn::Classifier load_model(const std::string& path) {
  auto root = open_archive(path);
  nn::Classifier model(nn::ModelConfig::from_string(read_config(root, path)));
  torch::serialize::InputArchive m;
  if (!root.try_read("model", m)) throw std::runtime_error("checkpoint " + path + ": no model parameters inside");
  model->load(m);
  model->eval();
  return model;
}

TrainResult train(const TrainConfig& cfg, const data::Splits& splits) {
  if (cfg.threads > 0) torch::set_num_threads(cfg.threads);  // torch's ops and the longattn kernels
  if (cfg.steps < 1 || cfg.batch < 1 || cfg.eval_batch < 1 || cfg.warmup < 0 || cfg.eval_every < 0 ||
      cfg.log_every < 1 || cfg.threads < 0 || !(cfg.clip >= 0) || !std::isfinite(cfg.clip) || !(cfg.lr > 0) ||
      !std::isfinite(cfg.lr) || !(cfg.weight_decay >= 0) || !std::isfinite(cfg.weight_decay))
    throw std::invalid_argument("train: need steps, batch, eval_batch, log_every >= 1; warmup, eval_every, threads >= 0; "
                                "finite clip, weight_decay >= 0 and lr > 0");
  Distributed* dist = cfg.dist && cfg.dist->world() > 1 ? cfg.dist.get() : nullptr;
  const int world = dist ? dist->world() : 1, rank = dist ? dist->rank() : 0;
  if (cfg.batch < world)
    throw std::invalid_argument("train: --batch (the global batch, " + std::to_string(cfg.batch) +
                                ") must be at least the number of processes (" + std::to_string(world) + ")");
  // This rank's rows of every global batch.
  const int64_t row_lo = cfg.batch * rank / world, row_hi = cfg.batch * (rank + 1) / world;
  data::validate(splits.train);
  nn::ModelConfig mc = cfg.model;
  fit_model_to_data(mc, splits);
  const torch::Device device = training_device(cfg.device);
  if (dist && !device.is_cpu())
    throw std::invalid_argument("train: data-parallel training runs on the CPU (Gloo); --device " + cfg.device +
                                " with several processes is not supported yet");
  torch::manual_seed(cfg.seed);
  nn::Classifier model(mc);
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(cfg.lr).weight_decay(cfg.weight_decay));
  const std::string latest = cfg.out_dir.empty() ? "" : cfg.out_dir + "/latest.ckpt";
  // Rank 0 alone writes (checkpoints, metrics, progress); every rank reads latest.ckpt to resume.
  const std::string best_path = cfg.out_dir.empty() || rank != 0 ? "" : cfg.out_dir + "/best.ckpt";
  const std::string save_path = rank != 0 ? "" : latest;
  const bool quiet = cfg.quiet || rank != 0;
  if (rank == 0 && !cfg.out_dir.empty() && ::mkdir(cfg.out_dir.c_str(), 0777) != 0 && errno != EEXIST)
    throw std::runtime_error("cannot create folder " + cfg.out_dir);

  TrainResult res;
  res.parameters = nn::count_parameters(*model);
  res.threads = torch::get_num_threads();
  res.world = world;
  int64_t step = 0;
  double best = -1;
  if (cfg.resume) {
    if (latest.empty()) throw std::invalid_argument("--resume needs the output folder of the interrupted run");
    auto root = open_archive(latest);
    if (read_config(root, latest) != mc.to_string())
      throw std::runtime_error("checkpoint " + latest + ": its model configuration differs from this run's; resume with the same options");
    torch::serialize::InputArchive m, o;
    root.read("model", m);
    model->load(m);
    root.read("optimizer", o);
    opt.load(o);
    torch::Tensor t_step, t_best, t_rng;  // one fresh tensor per read: read() resizes into a defined one
    root.read("step", t_step);
    step = t_step.item<int64_t>();
    root.read("best_val_accuracy", t_best);
    best = t_best.item<double>();
    root.read("cpu_rng", t_rng);
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(t_rng);
  }
  if (!device.is_cpu()) model->to(device), move_optimizer_state(opt, device);

  Progress progress(cfg.steps, step, cfg.log_every, quiet);
  // A fresh run starts the log afresh; a resumed one keeps the lines up to its checkpoint's step
  // (the interrupted run may have logged further steps, which it now repeats).
  MetricsLog metrics(cfg.out_dir.empty() || rank != 0 ? "" : cfg.out_dir + "/metrics.jsonl", cfg.resume ? step : 0);
  const std::string procs = world > 1 ? std::to_string(world) + " processes x " : "";
  if (!quiet && !cfg.resume) {
    std::ostringstream s;
    s << "model: " << mc.attention << (mc.fastrpb != "none" ? " + FastRPB " + mc.fastrpb : "") << ", " << mc.layers
      << " layers, dim " << mc.dim << ", " << mc.heads << " heads, ffn " << mc.ffn << ", max_len " << mc.max_len << ": "
      << res.parameters << " parameters; " << procs << res.threads << " threads; kernels "
      << kernels::isa_name(kernels::isa_active())
      << (device.is_cpu() ? "" : "; device " + device.str() + " (longattn's reference path)");
    progress.line(s.str());
  }
  if (cfg.resume && !quiet)
    progress.line("resumed at step " + std::to_string(step) + "; " + procs + std::to_string(res.threads) +
                  " threads; kernels " + kernels::isa_name(kernels::isa_active()));

  data::EpochOrder order(splits.train.size(), cfg.batch, cfg.seed, cfg.bucket,
                         cfg.bucket > 1 ? example_lengths(splits.train) : std::vector<int64_t>{});
  const data::BatchOptions bopt = batch_options(mc);
  model->train();
  const auto t0 = Clock::now();
  double train_seconds = 0, comm_seconds = 0, loss_ema = NAN, acc_ema = NAN;
  const std::vector<torch::Tensor> params = model->parameters();
  int64_t tokens = 0;
  const int64_t last = cfg.stop_after >= 0 ? std::min(cfg.steps, cfg.stop_after) : cfg.steps;
  while (step < last) {
    const auto ts = Clock::now();
    auto t = to_tensors(data::make_batch(splits.train, order.batch(step), bopt), device);
    if (dist) {
      // This rank's rows of the global batch, padded as the global batch is: every example sees the
      // same length, positions and dropout mask as in one process running the whole batch.
      auto rows = [&](const torch::Tensor& x) { return x.defined() ? x.slice(0, row_lo, row_hi) : x; };
      t.tokens = rows(t.tokens), t.mask = rows(t.mask), t.tokens2 = rows(t.tokens2), t.mask2 = rows(t.mask2);
      t.labels = rows(t.labels);
    }
    for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr_at(cfg, step));
    opt.zero_grad();
    torch::Tensor logits, loss;
    {
      nn::DropoutRowOffset rows_from(row_lo);
      logits = model->forward(t.tokens, t.mask, t.tokens2, t.mask2);
    }
    double l = 0, a = 0;
    if (dist) {
      // The global batch's mean loss is the sum over the ranks of (sum over this rank's rows) / batch,
      // so the all-reduced gradient is the one-process gradient of the combined batch.
      loss = torch::nn::functional::cross_entropy(logits, t.labels,
                                                  torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum)) /
             double(cfg.batch);
      loss.backward();
      std::vector<float> totals = {loss.item<float>(), logits.argmax(1).eq(t.labels).sum().item<float>()};
      const auto tc = Clock::now();
      all_reduce_gradients(*dist, params, totals, cfg.bucket_bytes);
      comm_seconds += std::chrono::duration<double>(Clock::now() - tc).count();
      l = totals[0], a = totals[1] / double(cfg.batch);
    } else {
      loss = torch::nn::functional::cross_entropy(logits, t.labels);
      loss.backward();
    }
    if (cfg.clip > 0) torch::nn::utils::clip_grad_norm_(model->parameters(), cfg.clip);
    opt.step();
    ++step;
    if (dist) {
      // Every rank applied the same update to the same parameters: check it, bit for bit.
      const auto tc = Clock::now();
      const std::vector<int64_t> hashes = dist->all_gather(parameter_hash(params), "the parameter check");
      comm_seconds += std::chrono::duration<double>(Clock::now() - tc).count();
      for (int r = 1; r < world; ++r)
        if (hashes[size_t(r)] != hashes[0])
          throw std::runtime_error("after step " + std::to_string(step) + " the parameters of rank " + std::to_string(r) +
                                   " differ from rank 0's (hash " + std::to_string(hashes[size_t(r)]) + " vs " +
                                   std::to_string(hashes[0]) + ")");
    } else {
      l = loss.item<double>();
      a = logits.argmax(1).eq(t.labels).to(torch::kDouble).mean().item<double>();
    }
    train_seconds += std::chrono::duration<double>(Clock::now() - ts).count();
    tokens += t.real_tokens;
    loss_ema = std::isnan(loss_ema) ? l : 0.9 * loss_ema + 0.1 * l;
    acc_ema = std::isnan(acc_ema) ? a : 0.9 * acc_ema + 0.1 * a;
    res.final_train_loss = l;
    const double tps = tokens / std::max(train_seconds, 1e-9);
    metrics.write(step, "train", {{"loss", l}, {"accuracy", a}, {"lr", lr_at(cfg, step - 1)}, {"tokens_per_s", tps}});
    progress.update(step, loss_ema, acc_ema, tps);
    const bool at_eval = (cfg.eval_every > 0 && step % cfg.eval_every == 0) || step == cfg.steps;
    if (at_eval && !splits.val.examples.empty()) {
      const EvalResult v = evaluate(model, splits.val, cfg.eval_batch, dist);
      metrics.write(step, "val", {{"loss", v.loss}, {"accuracy", v.accuracy}});
      char line[160];
      std::snprintf(line, sizeof line, "step %lld: val loss %.4f, val accuracy %.4f", (long long)step, v.loss, v.accuracy);
      progress.line(line);
      if (v.accuracy > best) {
        best = v.accuracy;
        if (!best_path.empty()) save_checkpoint(best_path, model, opt, step, best);
      }
    }
    if (!save_path.empty() && (at_eval || step == last)) save_checkpoint(save_path, model, opt, step, best);
  }
  progress.finish();
  res.comm_seconds = comm_seconds;
  res.train_seconds = train_seconds;
  res.steps_done = step;
  res.best_val_accuracy = best;
  res.wall_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  res.tokens_per_second = tokens / std::max(train_seconds, 1e-9);
  if (step == cfg.steps) {
    res.val = evaluate(model, splits.val, cfg.eval_batch, dist);
    res.test = evaluate(model, splits.test, cfg.eval_batch, dist);
    metrics.write(step, "test", {{"loss", res.test.loss}, {"accuracy", res.test.accuracy}});
  }
  res.peak_memory_mib = peak_memory_mib();
  if (dist) dist->barrier("the final barrier");  // rank 0's files are complete when any rank returns
  return res;
}

}  // namespace longattn::train
