// Data-parallel training on torch.distributed's C++ layer (c10d): a TCPStore for the rendezvous and
// a Gloo process group for the collectives (no transport of our own). A process joins a group from
// the environment torchrun and cluster launchers set (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
// MASTER_PORT); `longattn train --nproc N` sets it for N local processes (launch_local below).
//
// Failure: every collective runs under the group's timeout (--dist-timeout). Each rank also bumps a
// heartbeat counter in the store every half second from a thread of its own; when a collective fails
// (a peer's connection closed, or the timeout passed) the rank looks at the counters for two seconds,
// names the ranks whose counter stopped (dead or hung; the store's host is rank 0, so an unreachable
// store names rank 0), prints that and exits the process: no silent hang, no half-dead group.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace longattn::train {

// Whether this build has the Gloo (and NCCL) process groups: `longattn info` reports it.
bool distributed_gloo_built();
bool distributed_nccl_built();

class Distributed {
 public:
  // The group this process belongs to per the environment, or nullptr when RANK / WORLD_SIZE are unset
  // (a single-process run). Throws on an incomplete or inconsistent environment.
  static std::shared_ptr<Distributed> from_environment(std::chrono::seconds timeout);
  ~Distributed();

  int rank() const { return rank_; }
  int world() const { return world_; }
  int local_rank() const { return local_rank_; }

  // In-place sum over the ranks (float or double, contiguous).
  void all_reduce_sum(torch::Tensor& t, const char* what);
  // Every rank's value of x, in rank order.
  std::vector<int64_t> all_gather(int64_t x, const char* what);
  void barrier(const char* what);

 private:
  Distributed() = default;
  [[noreturn]] void fail(const char* what, const std::string& error);
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, world_ = 1, local_rank_ = 0;
  std::chrono::seconds timeout_{0};
};

// Sums the gradients of `params` over the ranks through flat buffers of at most bucket_bytes each
// (one collective per bucket instead of one per tensor); `extra` (a few float scalars, e.g. the
// step's loss sum) rides in the last bucket and is summed too. Undefined gradients count as zeros.
void all_reduce_gradients(Distributed& d, const std::vector<torch::Tensor>& params, std::vector<float>& extra,
                          int64_t bucket_bytes);

// FNV-1a over the parameters' bytes: equal on every rank after every step of a correct run.
int64_t parameter_hash(const std::vector<torch::Tensor>& params);

// `--nproc N`: runs this executable N times with `args` (the train command's arguments without
// --nproc) as ranks 0..N-1 on 127.0.0.1 and a free port, each with `threads` intra-op threads; waits
// for all. When one exits with an error or a signal, names it, gives the others the timeout to end on
// their own, then kills them. Returns the exit code for the tool (0 when every rank ended well).
int launch_local(int nproc, int threads, const std::vector<std::string>& args, std::chrono::seconds timeout);

}  // namespace longattn::train
