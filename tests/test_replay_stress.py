"""Multi-process stress of the replay buffer: writers race a sampler, and one writer is SIGKILLed.

Each writer process owns one stream and writes a synthetic world whose every frame is filled with
one 64-bit tag (stream, step, is-final-obs), so any sampled frame says which step it is, and a torn
frame (two tags mixed) is visible. Episode lengths and rewards are functions of the step, so the
sampler recomputes every field of every sampled transition and counts mismatches, which must be zero.
The writer of stream 0 is killed with SIGKILL mid-stream (at a random point, possibly mid-add); a
fresh process attaches and writes the stream on from its head, as a restarted env worker would: with a
new episode (its env restarted), so the killed writer's open episode must end truncated at its last
complete step and never be joined to the new one.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

from rtcore import ReplayBuffer

SHAPE = (84, 84)
WORDS = 84 * 84 // 8
K, N, GAMMA = 4, 3, 0.9


def L(s: int) -> int:
    """Episode length of stream s."""
    return 5 + 2 * s


def tag(s: int, t: int, final: bool) -> int:
    return (s << 48) | (int(final) << 47) | t


def reward(t: int) -> float:
    return (t % 11) * 0.5 - 1.0


def terminated(s: int, t: int) -> bool:
    return (t + 1) % L(s) == 0 and (t // L(s)) % 3 != 2


def truncated(s: int, t: int) -> bool:
    return (t + 1) % L(s) == 0 and (t // L(s)) % 3 == 2


def frame(v: int) -> np.ndarray:
    return np.full(WORDS, v, np.uint64).view(np.uint8).reshape(SHAPE)


def next_step(buf: ReplayBuffer, s: int) -> int:
    """The step to write next on stream s, recovered from the shared head alone: each finished
    episode of L steps took L + 1 slots."""
    h = buf.head(s)
    return h - h // (L(s) + 1)


def writer(name: str, s: int, steps: int, go, start: int = -1) -> None:
    buf = ReplayBuffer.attach(name)
    go.wait()
    t0 = next_step(buf, s) if start < 0 else start
    for t in range(t0, t0 + steps if steps >= 0 else 1 << 62):
        end = (t + 1) % L(s) == 0
        buf.add(s, frame(tag(s, t, False)), t * 3 + s, reward(t), terminated(s, t), truncated(s, t),
                next_obs=frame(tag(s, t, True)) if end else None, was_default=t % 4 == 0, delay=t % 9)
    buf.close()


def kill_and_hand_over(ctx, buf: ReplayBuffer, victim, go, cut, heir_steps: int):
    """SIGKILLs stream 0's writer mid-stream and starts its heir; returns ``(killed_at, head_at_kill, heir)``.

    The heir, a new process, writes stream 0 on from its head, starting the world's next episode (a
    restarted env). If the dead writer left an episode open, the heir's first add closes it as truncated:
    its last complete step becomes that episode's final obs, recorded in ``cut`` for :func:`verify`."""
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(10)
    assert victim.exitcode == -signal.SIGKILL
    killed_at = next_step(buf, 0)  # steps completely written
    head_at_kill = buf.head(0)
    if killed_at % L(0):
        cut.value = killed_at - 1
        heir_start = (killed_at - 1) - (killed_at - 1) % L(0) + L(0)
    else:
        heir_start = killed_at
    heir = ctx.Process(target=writer, args=(buf.name, 0, heir_steps, go, heir_start))
    heir.start()
    return killed_at, head_at_kill, heir


def verify(batch, i: int, cut: int = -1) -> str:
    """'' if row i of the batch is exactly what the world says, else what is wrong. ``cut``: the step of
    stream 0 whose slot became the final obs of the killed writer's episode (-1: none yet)."""
    obs = batch.obs[i].reshape(K, -1).view(np.uint64)
    nxt = batch.next_obs[i].reshape(K, -1).view(np.uint64)
    if not ((obs == obs[:, :1]).all() and (nxt == nxt[:, :1]).all()):
        return "torn frame"
    last = int(obs[K - 1, 0])
    s, final, t = last >> 48, (last >> 47) & 1, last & ((1 << 47) - 1)
    if final:
        return "an episode's final obs was sampled as a transition"
    if int(batch.index[i]) % 3 != s:
        return "index names another stream"
    e0, u = t - t % L(s), t % L(s)
    length, end_tag, ends_terminated = L(s), tag(s, e0 + L(s) - 1, True), terminated(s, e0 + L(s) - 1)
    if s == 0 and cut >= 0 and e0 == cut - cut % L(s):  # the killed writer's episode: truncated before `cut`
        if t >= cut:
            return "the killed writer's last step (no next obs) was sampled"
        length, end_tag, ends_terminated = cut - e0, tag(s, cut, False), False
    for k in range(K):
        if int(obs[k, 0]) != tag(s, max(t - (K - 1 - k), e0), False):
            return f"obs frame {k} of ({s}, {t})"
    m = min(N, length - u)
    ended = u + m == length
    done = ended and ends_terminated
    ret = sum(GAMMA**q * np.float32(reward(t + q)) for q in range(m))
    if int(batch.action[i]) != t * 3 + s:
        return "action"
    if abs(float(batch.reward[i]) - ret) > 1e-5 * (1 + abs(ret)):
        return "n-step reward"
    if bool(batch.done[i]) != done:
        return "done"
    if abs(float(batch.discount[i]) - (0.0 if done else GAMMA**m)) > 1e-6:
        return "discount"
    if bool(batch.was_default[i]) != (t % 4 == 0) or int(batch.delay[i]) != t % 9:
        return "was_default/delay"
    for k in range(K):
        off = max(u + m - (K - 1 - k), 0)
        want = end_tag if off == length else tag(s, e0 + off, False)
        if int(nxt[k, 0]) != want:
            return f"next_obs frame {k} of ({s}, {t})"
    return ""


def sampler(name: str, stop, results, cut) -> None:
    buf = ReplayBuffer.attach(name)
    buf.seed(os.getpid())
    out = buf.empty_batch(32)
    rows = bad = 0
    first = ""
    while not stop.is_set():
        if len(buf) < 32:
            continue
        buf.sample(32, out=out)
        c = cut.value  # read after the sample: a batch that holds the heir's steps was drawn after it was set
        for i in range(32):
            err = verify(out, i, c)
            if err:
                bad += 1
                first = first or err
        rows += 32
    results.put((rows, bad, first, buf._h.collisions()))
    buf.close()


@pytest.mark.timeout(120)
def test_writers_and_sampler_processes_never_see_a_torn_transition_even_when_a_writer_is_killed(kill_alive):
    ctx = mp.get_context("spawn")
    # 3 streams of 60 slots: writers lap their rings hundreds of times while the sampler reads.
    buf = ReplayBuffer(3 * 60, SHAPE, "uint8", frame_stack=K, streams=3, n_step=N, gamma=GAMMA)
    go, stop, results, cut = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Value("q", -1)
    procs = []
    try:
        victim = ctx.Process(target=writer, args=(buf.name, 0, -1, go))  # writes until killed
        procs.append(victim)
        procs += [ctx.Process(target=writer, args=(buf.name, s, 15000, go)) for s in (1, 2)]
        procs.append(ctx.Process(target=sampler, args=(buf.name, stop, results, cut)))
        for p in procs:
            p.start()
        go.set()
        deadline = time.monotonic() + 60
        while buf.head(0) < 8000 and time.monotonic() < deadline:
            time.sleep(0.005)
        killed_at, head_at_kill, heir = kill_and_hand_over(ctx, buf, victim, go, cut, 5000)
        assert killed_at >= 8000 - 8000 // 6
        procs.append(heir)
        for p in procs[1:3] + [heir]:
            p.join(90)
            assert p.exitcode == 0
        stop.set()
        rows, bad, first, collisions = results.get(timeout=30)
        procs[3].join(10)
        assert procs[3].exitcode == 0
        heads = [buf.head(0) - head_at_kill, next_step(buf, 1), next_step(buf, 2)]
        after = buf.sample(64)
        c = cut.value
    finally:
        kill_alive(procs)
        results.close()
        buf.close()
    print(f"stress: {rows} rows checked, {collisions} redrawn after a concurrent overwrite, writer killed at step {killed_at}")
    assert bad == 0, f"{bad} of {rows} sampled transitions were wrong, first: {first}"
    assert rows >= 32 * 10
    # Every stream ended exactly where its writers stopped; the killed add left no trace, and closing
    # the open episode took no slot (the heir's 5000 steps from an episode start: 5000 / L(0) episodes).
    assert heads == [5000 + 5000 // L(0), 15000, 15000]
    # A sample after the writers stopped sees the final state only, including the heir's steps.
    final = after
    assert all(verify(final, i, c) == "" for i in range(64))
    assert max(int(x) for x in final.index) // 3 >= killed_at
