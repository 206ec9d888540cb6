#include "apps/train/distributed.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <thread>

#ifdef LONGATTN_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

extern char** environ;

namespace longattn::train {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

int env_int(const char* name, const std::string& value) {
  size_t pos = 0;
  int v = 0;
  try {
    v = std::stoi(value, &pos);
  } catch (const std::exception&) {
    pos = std::string::npos;
  }
  if (pos != value.size()) throw std::invalid_argument(std::string(name) + "=" + value + ": expected an integer");
  return v;
}

}  // namespace

bool distributed_gloo_built() {
#ifdef LONGATTN_WITH_GLOO
  return true;
#else
  return false;
#endif
}

// The operators run on CPU tensors only in this build, so NCCL (GPU collectives) has no use yet.
bool distributed_nccl_built() { return false; }

#ifdef LONGATTN_WITH_GLOO
struct Distributed::Impl {
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
  std::thread heartbeat;
  std::atomic<bool> stop{false};
  std::string master;
};
#else
struct Distributed::Impl {};
#endif

std::shared_ptr<Distributed> Distributed::from_environment(std::chrono::seconds timeout) {
  const std::string rank_s = env("RANK"), world_s = env("WORLD_SIZE");
  if (rank_s.empty() && world_s.empty()) return nullptr;
  if (rank_s.empty() || world_s.empty())
    throw std::invalid_argument("RANK and WORLD_SIZE must be set together (got RANK='" + rank_s + "', WORLD_SIZE='" +
                                world_s + "')");
  const int rank = env_int("RANK", rank_s), world = env_int("WORLD_SIZE", world_s);
  if (world < 1 || rank < 0 || rank >= world)
    throw std::invalid_argument("RANK must be in [0, WORLD_SIZE), got RANK=" + rank_s + ", WORLD_SIZE=" + world_s);
  const std::string local_s = env("LOCAL_RANK");
  std::shared_ptr<Distributed> d(new Distributed());
  d->rank_ = rank, d->world_ = world, d->local_rank_ = local_s.empty() ? 0 : env_int("LOCAL_RANK", local_s);
  d->timeout_ = timeout;
  d->impl_ = std::make_unique<Impl>();
  if (world == 1) return d;  // a group of one: no store, no collectives
#ifndef LONGATTN_WITH_GLOO
  throw std::runtime_error("this build has no distributed support (Gloo headers were not found at configure time; "
                           "`longattn info` says so); WORLD_SIZE=" + world_s + " needs it");
#else
  const std::string addr = env("MASTER_ADDR"), port_s = env("MASTER_PORT");
  if (addr.empty() || port_s.empty())
    throw std::invalid_argument("WORLD_SIZE=" + world_s + " needs MASTER_ADDR and MASTER_PORT (got '" + addr + "', '" +
                                port_s + "')");
  const int port = env_int("MASTER_PORT", port_s);
  if (port < 1 || port > 65535) throw std::invalid_argument("MASTER_PORT must be in [1, 65535], got " + port_s);
  c10d::TCPStoreOptions so;
  so.port = uint16_t(port);
  so.isServer = rank == 0;
  so.numWorkers = size_t(world);
  so.timeout = timeout;
  d->impl_->master = addr + ":" + port_s;
  try {
    d->impl_->store = c10::make_intrusive<c10d::TCPStore>(addr, so);
  } catch (const std::exception& e) {
    throw std::runtime_error(rank == 0 ? "rank 0: not every one of the " + world_s + " ranks joined the store at " +
                                             d->impl_->master + " within " + std::to_string(timeout.count()) + " s: " + e.what()
                                       : "rank " + rank_s + ": cannot reach the store at " + d->impl_->master +
                                             " (rank 0 hosts it) within " + std::to_string(timeout.count()) + " s: " + e.what());
  }
  auto opts = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(timeout));
  const std::string ifname = env("GLOO_SOCKET_IFNAME");
  if (!ifname.empty())
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  else if (addr == "127.0.0.1" || addr == "localhost")
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  else
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  opts->threads = 1;
  try {
    d->impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(d->impl_->store, rank, world, opts);
  } catch (const std::exception& e) {
    d->fail("joining the Gloo group", e.what());
  }
  // The heartbeat: its own connection to the store, so it never waits behind the main thread.
  auto beat_store = d->impl_->store->clone();
  Impl* impl = d->impl_.get();
  impl->heartbeat = std::thread([impl, beat_store, key = "heartbeat/" + rank_s] {
    try {
      while (!impl->stop.load()) {
        beat_store->add(key, 1);
        for (int i = 0; i < 5 && !impl->stop.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    } catch (const std::exception&) {
      // The store went away (rank 0 ended): the main thread finds out at its next collective.
    }
  });
  return d;
#endif
}

Distributed::~Distributed() {
#ifdef LONGATTN_WITH_GLOO
  if (impl_ && impl_->heartbeat.joinable()) {
    impl_->stop = true;
    impl_->heartbeat.join();
  }
#endif
}

void Distributed::fail(const char* what, const std::string& error) {
  std::string who;
#ifdef LONGATTN_WITH_GLOO
  // Which ranks stopped beating? Two seconds is four beats of a live rank.
  try {
    auto probe = impl_->store->clone();
    std::vector<int64_t> before(static_cast<size_t>(world_)), after(static_cast<size_t>(world_));
    for (int r = 0; r < world_; ++r) before[size_t(r)] = probe->add("heartbeat/" + std::to_string(r), 0);
    std::this_thread::sleep_for(std::chrono::seconds(2));
    for (int r = 0; r < world_; ++r) after[size_t(r)] = probe->add("heartbeat/" + std::to_string(r), 0);
    for (int r = 0; r < world_; ++r)
      if (r != rank_ && after[size_t(r)] == before[size_t(r)]) who += (who.empty() ? "" : ", ") + std::to_string(r);
    who = who.empty() ? "every other rank still beats: one took longer than --dist-timeout (" +
                            std::to_string(timeout_.count()) + " s) to reach this collective"
                      : "rank " + who + " stopped (died or hung: no heartbeat for 2 s)";
  } catch (const std::exception&) {
    who = "rank 0 died or hung (its store at " + impl_->master + " does not answer)";
  }
#endif
  std::fprintf(stderr, "longattn train: rank %d: error: %s failed: %s; %s. Ending this rank.\n", rank_, what,
               error.c_str(), who.c_str());
  std::fflush(stderr);
  std::fflush(stdout);
  std::_Exit(3);  // the group is broken: destructors would wait on it
}

void Distributed::all_reduce_sum(torch::Tensor& t, const char* what) {
  if (world_ == 1) return;
#ifdef LONGATTN_WITH_GLOO
  try {
    std::vector<at::Tensor> ts{t};
    impl_->group->allreduce(ts)->wait();
  } catch (const std::exception& e) {
    fail(what, e.what());
  }
#endif
}

std::vector<int64_t> Distributed::all_gather(int64_t x, const char* what) {
  std::vector<int64_t> out{x};
  if (world_ == 1) return out;
#ifdef LONGATTN_WITH_GLOO
  try {
    std::vector<at::Tensor> in{torch::tensor({x}, torch::kLong)};
    std::vector<std::vector<at::Tensor>> gathered(1);
    for (int r = 0; r < world_; ++r) gathered[0].push_back(torch::empty({1}, torch::kLong));
    impl_->group->allgather(gathered, in)->wait();
    out.clear();
    for (auto& g : gathered[0]) out.push_back(g.item<int64_t>());
  } catch (const std::exception& e) {
    fail(what, e.what());
  }
#endif
  return out;
}

void Distributed::barrier(const char* what) {
  if (world_ == 1) return;
#ifdef LONGATTN_WITH_GLOO
  try {
    impl_->group->barrier()->wait();
  } catch (const std::exception& e) {
    fail(what, e.what());
  }
#endif
}

void all_reduce_gradients(Distributed& d, const std::vector<torch::Tensor>& params, std::vector<float>& extra,
                          int64_t bucket_bytes) {
  const int64_t per_bucket = std::max<int64_t>(1, bucket_bytes / int64_t(sizeof(float)));
  size_t first = 0;
  while (first < params.size() || !extra.empty()) {
    // Parameters [first, end) fill this bucket; a tensor larger than a bucket gets one of its own.
    size_t end = first;
    int64_t n = 0;
    while (end < params.size() && (end == first || n + params[end].numel() <= per_bucket)) n += params[end++].numel();
    const bool last = end == params.size();
    torch::Tensor flat = torch::empty({n + (last ? int64_t(extra.size()) : 0)}, torch::kFloat);
    int64_t at = 0;
    for (size_t i = first; i < end; ++i) {
      const auto& p = params[i];
      auto slot = flat.slice(0, at, at + p.numel());
      if (p.grad().defined()) slot.copy_(p.grad().reshape({-1}));
      else slot.zero_();
      at += p.numel();
    }
    if (last)
      for (size_t k = 0; k < extra.size(); ++k) flat[at + int64_t(k)].fill_(extra[k]);
    d.all_reduce_sum(flat, "the gradient all-reduce");
    at = 0;
    for (size_t i = first; i < end; ++i) {
      auto& p = params[i];
      auto slot = flat.slice(0, at, at + p.numel()).view(p.sizes());
      if (!p.grad().defined()) const_cast<torch::Tensor&>(p).mutable_grad() = slot.clone();
      else p.grad().copy_(slot);
      at += p.numel();
    }
    if (last) {
      auto acc = flat.accessor<float, 1>();
      for (size_t k = 0; k < extra.size(); ++k) extra[k] = acc[at + int64_t(k)];
      break;
    }
    first = end;
  }
}

int64_t parameter_hash(const std::vector<torch::Tensor>& params) {
  uint64_t h = 1469598103934665603ull;
  for (const auto& p : params) {
    const torch::Tensor c = p.detach().contiguous();
    const auto* bytes = static_cast<const unsigned char*>(c.data_ptr());
    const size_t n = size_t(c.numel()) * c.element_size();
    for (size_t i = 0; i < n; ++i) h = (h ^ bytes[i]) * 1099511628211ull;
  }
  return int64_t(h);
}

int launch_local(int nproc, int threads, const std::vector<std::string>& args, std::chrono::seconds timeout) {
  // A free port: bind port 0 on loopback, read it back, release it for rank 0's store.
  int port = 0;
  {
    const int s = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (s < 0 || ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error(std::string("--nproc: cannot find a free port on 127.0.0.1: ") + std::strerror(errno));
    port = ntohs(a.sin_port);
    ::close(s);
  }
  std::vector<std::string> base_env;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    const std::string k = kv.substr(0, kv.find('='));
    if (k != "RANK" && k != "WORLD_SIZE" && k != "LOCAL_RANK" && k != "LOCAL_WORLD_SIZE" && k != "MASTER_ADDR" &&
        k != "MASTER_PORT" && k != "OMP_NUM_THREADS")
      base_env.push_back(kv);
  }
  char exe[4096];
  const ssize_t exe_len = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (exe_len <= 0) throw std::runtime_error(std::string("--nproc: cannot find this executable: ") + std::strerror(errno));
  exe[exe_len] = 0;
  std::vector<pid_t> pids(size_t(nproc), -1);
  std::string line = "launching " + std::to_string(nproc) + " ranks on 127.0.0.1:" + std::to_string(port) + ", " +
                     std::to_string(threads) + " thread" + (threads == 1 ? "" : "s") + " each:";
  for (int r = 0; r < nproc; ++r) {
    std::vector<std::string> e = base_env;
    for (const auto& kv : {"RANK=" + std::to_string(r), "WORLD_SIZE=" + std::to_string(nproc),
                           "LOCAL_RANK=" + std::to_string(r), "LOCAL_WORLD_SIZE=" + std::to_string(nproc),
                           std::string("MASTER_ADDR=127.0.0.1"), "MASTER_PORT=" + std::to_string(port),
                           "OMP_NUM_THREADS=" + std::to_string(threads)})
      e.push_back(kv);
    std::vector<std::string> a = {"longattn", "train"};
    a.insert(a.end(), args.begin(), args.end());
    a.push_back("--threads=" + std::to_string(threads));
    std::vector<char*> argv, envp;
    for (auto& s : a) argv.push_back(s.data());
    for (auto& s : e) envp.push_back(s.data());
    argv.push_back(nullptr), envp.push_back(nullptr);
    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, exe, nullptr, nullptr, argv.data(), envp.data());
    if (rc != 0) {
      for (pid_t p : pids)
        if (p > 0) ::kill(p, SIGKILL);
      throw std::runtime_error("--nproc: cannot start rank " + std::to_string(r) + ": " + std::strerror(rc));
    }
    pids[size_t(r)] = pid;
    line += " rank " + std::to_string(r) + " pid " + std::to_string(pid);
  }
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  int exit_code = 0, running = nproc;
  std::chrono::steady_clock::time_point deadline{};
  bool failing = false;
  while (running > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, failing ? WNOHANG : 0);
    if (pid == 0) {  // failing: the others still run
      if (std::chrono::steady_clock::now() > deadline) {
        for (int r = 0; r < nproc; ++r)
          if (pids[size_t(r)] > 0) {
            std::fprintf(stderr, "longattn train: rank %d (pid %d) did not end within --dist-timeout + 10 s of the "
                                 "failure: killed\n", r, int(pids[size_t(r)]));
            ::kill(pids[size_t(r)], SIGKILL);
          }
        failing = false;  // wait for the killed ones below
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      continue;
    }
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    const auto it = std::find(pids.begin(), pids.end(), pid);
    if (it == pids.end()) continue;
    const int r = int(it - pids.begin());
    *it = -1;
    --running;
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok && exit_code == 0) {
      exit_code = 1;
      if (WIFSIGNALED(status))
        std::fprintf(stderr, "longattn train: rank %d (pid %d) was killed by signal %d (%s)\n", r, int(pid),
                     WTERMSIG(status), strsignal(WTERMSIG(status)));
      else
        std::fprintf(stderr, "longattn train: rank %d (pid %d) exited with code %d\n", r, int(pid), WEXITSTATUS(status));
      failing = true;
      deadline = std::chrono::steady_clock::now() + timeout + std::chrono::seconds(10);
    }
  }
  return exit_code;
}

}  // namespace longattn::train
