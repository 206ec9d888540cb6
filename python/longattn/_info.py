import torch


def info():
    """Build and runtime information: version, torch, threads, CPU features, kernels, backends."""
    d = dict(line.split("=", 1) for line in torch.ops.longattn._build_info().strip().splitlines())
    d["torch"] = torch.__version__
    d["threads"] = torch.get_num_threads()
    return d
