// Training progress: a one-line bar redrawn in place on a terminal (step, loss, accuracy,
// tokens/s, ETA), plain lines otherwise; metrics as JSON lines; peak memory.
#pragma once

#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>

namespace longattn::train {

class Progress {
 public:
  Progress(int64_t total_steps, int64_t first_step, int64_t plain_every, bool quiet);
  void update(int64_t step, double loss, double acc, double tokens_per_s);
  void line(const std::string& text);  // a message that survives the bar
  void finish();

 private:
  int64_t total_, first_, every_;
  bool tty_, quiet_, drawn_ = false;
  std::chrono::steady_clock::time_point start_;
};

class MetricsLog {
 public:
  // Keeps the existing lines of path whose step is <= keep_through (none for 0), then appends;
  // "" disables. The file is rewritten through a temporary name, so a crash keeps the old one.
  MetricsLog(const std::string& path, int64_t keep_through);
  // One JSON object per call: {"step": s, "split": "...", key: value, ...}
  void write(int64_t step, const std::string& split, std::initializer_list<std::pair<const char*, double>> values);

 private:
  std::ofstream os_;
};

double peak_memory_mib();  // peak resident set size of this process
std::string format_duration(double seconds);

}  // namespace longattn::train
