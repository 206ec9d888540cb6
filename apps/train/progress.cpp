#include "apps/train/progress.h"

#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace longattn::train {

Progress::Progress(int64_t total_steps, int64_t first_step, int64_t plain_every, bool quiet)
    : total_(total_steps), first_(first_step), every_(plain_every < 1 ? 1 : plain_every), tty_(::isatty(2) != 0),
      quiet_(quiet), start_(std::chrono::steady_clock::now()) {}

std::string format_duration(double s) {
  char b[32];
  if (!std::isfinite(s) || s < 0) return "?";
  if (s < 60) std::snprintf(b, sizeof b, "%.0fs", s);
  else if (s < 3600) std::snprintf(b, sizeof b, "%dm%02ds", int(s / 60), int(s) % 60);
  else std::snprintf(b, sizeof b, "%dh%02dm", int(s / 3600), int(s / 60) % 60);
  return b;
}

void Progress::update(int64_t step, double loss, double acc, double tokens_per_s) {
  if (quiet_) return;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double done = double(step - first_);
  const double eta = done > 0 ? elapsed / done * double(total_ - step) : NAN;
  char text[256];
  std::snprintf(text, sizeof text, "step %lld/%lld  loss %.4f  acc %.3f  %.0f tok/s  ETA %s", (long long)step,
                (long long)total_, loss, acc, tokens_per_s, format_duration(eta).c_str());
  if (tty_) {
    const int width = 24, filled = int(width * double(step) / double(total_ > 0 ? total_ : 1));
    std::string bar(size_t(filled), '#');
    bar.resize(size_t(width), '.');
    std::fprintf(stderr, "\r[%s] %s\033[K", bar.c_str(), text);
    drawn_ = true;
  } else if (step % every_ == 0 || step == total_) {
    std::fprintf(stderr, "%s\n", text);
  }
}

void Progress::line(const std::string& text) {
  if (quiet_) return;
  if (drawn_) std::fprintf(stderr, "\r\033[K");
  std::fprintf(stderr, "%s\n", text.c_str());
}

void Progress::finish() {
  if (drawn_ && !quiet_) std::fprintf(stderr, "\n");
  drawn_ = false;
}

MetricsLog::MetricsLog(const std::string& path, int64_t keep_through) {
  if (path.empty()) return;
  std::string kept;
  if (keep_through > 0) {
    std::ifstream in(path);
    const std::string key = "{\"step\": ";
    for (std::string line; std::getline(in, line);) {
      if (line.rfind(key, 0) != 0) continue;  // not one of ours (or a line cut by a crash)
      if (std::strtoll(line.c_str() + key.size(), nullptr, 10) <= keep_through && line.back() == '}') kept += line + "\n";
    }
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << kept;
    if (!out) throw std::runtime_error("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error("cannot rename " + tmp + " to " + path);
  os_.open(path, std::ios::app);
}

void MetricsLog::write(int64_t step, const std::string& split, std::initializer_list<std::pair<const char*, double>> values) {
  if (!os_.is_open()) return;
  os_ << "{\"step\": " << step << ", \"split\": \"" << split << "\"";
  for (const auto& [k, v] : values) {
    os_ << ", \"" << k << "\": ";
    if (std::isfinite(v)) os_ << v;
    else os_ << "null";
  }
  os_ << "}\n";
  os_.flush();
}

double peak_memory_mib() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;  // Linux reports KiB
}

}  // namespace longattn::train
