"""Learner benchmark: rtcore's round-robin learners against a plain single-process PyTorch DQN loop.

Both sides run the same update: Impala CNN (``--model``, default impala:k=1), batch 32 of 84x84 stacks
of 4 uint8 frames, double DQN with a target network, Huber loss, Adam (lr 1e-4, eps 1.5e-4), gradient
clipping at norm 10, one torch thread per process on the CPU.

- rtcore: :func:`rtcore.agent.learner.measure_updates_per_second` -- M = 1, 2, 4 learner processes
  that sample the shared replay buffer, compute gradients at their snapshot, and apply them in turnstile
  order to the shared master parameters with the shared Adam state, publishing every version to the
  ParamStore. On ``--device cuda`` the state, the target network and the versions live on the GPU
  (CUDA IPC between the learner processes). Timed from the first applied update (start-up excluded).
- plain PyTorch, set up at its best as a maintainer would write it: one process, the model, target and
  ``torch.optim.Adam`` (default foreach implementation) on the device, the replay frames preallocated
  on the same device and sampled with ``torch.randint`` + indexing (no host round trip, no page faults),
  ``clip_grad_norm_``, no ``.item()`` in the loop (the loop synchronises only when the clock is read).
  Warmed up (allocator, cuDNN/oneDNN) before timing.

Ratios are rtcore updates/s over plain updates/s (>= 1: rtcore is faster; M learners on M cores can
beat one process). Medians of ``--repeats`` runs (3). One JSON line at the end.

Usage: python bench/learner.py [--quick] [--device cpu|cuda] [--model impala:k=1] [--learners 1 2 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def plain_updates_per_second(model_spec: str, seconds: float, *, batch_size: int = 32, frame_stack: int = 4,
                             n_actions: int = 6, capacity: int = 2_000, device: str = "cpu", seed: int = 0) -> float:
    """Updates per second of a single-process DQN loop (see the module docstring)."""
    import copy

    import torch.nn.functional as F

    from rtcore.models import build_model

    torch.manual_seed(seed)
    dev = torch.device(device)
    online = build_model(model_spec, frame_stack, n_actions).to(dev).train()
    target = copy.deepcopy(online).eval()
    for p in target.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(online.parameters(), lr=1e-4, eps=1.5e-4)
    g = torch.Generator(device=dev).manual_seed(seed)
    frames = torch.randint(0, 256, (capacity, frame_stack, 84, 84), dtype=torch.uint8, device=dev, generator=g)
    actions = torch.randint(0, n_actions, (capacity,), device=dev, generator=g)
    rewards = torch.randn(capacity, device=dev, generator=g)
    discounts = torch.full((capacity,), 0.99 ** 3, device=dev)

    def update() -> None:
        idx = torch.randint(0, capacity - 1, (batch_size,), device=dev, generator=g)
        obs, nxt = frames[idx], frames[idx + 1]
        q = online(obs).gather(1, actions[idx].unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            best = online(nxt).argmax(dim=1, keepdim=True)
            y = rewards[idx] + discounts[idx] * target(nxt).gather(1, best).squeeze(1)
        loss = F.smooth_l1_loss(q, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(online.parameters(), 10.0)
        opt.step()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    for _ in range(5):  # warm-up: allocator, kernels, Adam state
        update()
    sync()
    n, t0 = 0, time.perf_counter()
    check = 1 if dev.type == "cpu" else 16  # on a GPU, reading the clock every update would sync the queue
    while True:
        update()
        n += 1
        if n % check == 0:
            sync()
            if time.perf_counter() - t0 >= seconds:
                break
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short runs (3 s each)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="impala:k=1")
    ap.add_argument("--learners", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--seconds", type=float, default=None, help="seconds per measurement (default 10, quick 3)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    torch.set_num_threads(1)

    from rtcore.agent.learner import measure_updates_per_second

    plain, ours = [], {m: [] for m in args.learners}
    details = {m: [] for m in args.learners}
    for rep in range(args.repeats):  # interleaved, so a change in machine load hits both sides alike
        plain.append(plain_updates_per_second(args.model, seconds, device=args.device, seed=rep))
        for m in args.learners:
            r = measure_updates_per_second(args.model, m, seconds, device=args.device, seed=rep)
            ours[m].append(r["updates_per_s"])
            details[m].append(r)
    p50 = statistics.median(plain)
    dev_name = args.device
    if args.device.startswith("cuda"):
        dev_name = f"{args.device} ({torch.cuda.get_device_name(torch.device(args.device))})"
    print(f"learner updates/s, {args.model}, batch 32, double DQN, Huber, Adam; {dev_name}; "
          f"median of {args.repeats} x {seconds:.0f} s")
    print(f"  plain PyTorch loop (1 process): {p50:8.2f} updates/s  ({1e3 / p50:.2f} ms/update)")
    out = {"bench": "learner", "device": dev_name, "model": args.model, "seconds": seconds, "repeats": args.repeats,
           "plain_updates_per_s": p50, "rtcore": {}}
    for m in args.learners:
        u = statistics.median(ours[m])
        stale = statistics.median(d["staleness"] for d in details[m])
        grad = statistics.median(d["grad_ms"] for d in details[m])
        apply = statistics.median(d["apply_ms"] for d in details[m])
        print(f"  rtcore M={m}: {u:8.2f} updates/s  ratio {u / p50:5.2f}x  (grad {grad:.1f} ms, apply {apply:.2f} ms, "
              f"staleness {stale:.2f})")
        out["rtcore"][str(m)] = {"updates_per_s": u, "ratio": u / p50, "grad_ms": grad, "apply_ms": apply,
                                 "staleness": stale}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
