"""The shared-memory parameter store: versions, pins, zero-copy binding, processes, and crashed readers."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import threading
import time

import numpy as np
import pytest
import torch

import rtcore
from rtcore import ParamStore
from rtcore.models import build_model, example_input
from rtcore.models.export import load_for_inference
from rtcore.shared.params import ParamReader, bind_flat, module_numel


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_publish_and_read_round_trip(rng):
    with ParamStore(1000, buffers=3) as store:
        assert (store.numel, store.buffers, store.dtype, store.version) == (1000, 3, np.float32, 0)
        data = rng.standard_normal(1000).astype(np.float32)
        assert store.publish(data) == 1
        with store.read() as (version, view):
            assert version == 1 and store.version == 1
            np.testing.assert_array_equal(view, data)
            assert view.dtype == np.float32 and view.shape == (1000,)
        # parts in order, tensors, and conversion from another dtype
        assert store.publish([data[:300], torch.from_numpy(data[300:]).double()]) == 2
        with store.read() as (version, view):
            np.testing.assert_allclose(view, data)
        assert store.stats()["published"] == 2


def test_bad_arguments_raise_clearly():
    with pytest.raises(ValueError, match="numel must be a positive integer"):
        ParamStore(0)
    with pytest.raises(ValueError, match=r"buffers must be an integer in \[2, 64\]"):
        ParamStore(10, buffers=1)
    with pytest.raises(ValueError, match="dtype 'int8' is not supported"):
        ParamStore(10, dtype="int8")
    with ParamStore(10) as store:
        with pytest.raises(ValueError, match="parameters have 9 elements, expected 10"):
            store.publish(np.zeros(9, np.float32))
        with pytest.raises(TimeoutError, match="no parameters were published"):
            store.pin(timeout=0.01)
        store.publish(np.zeros(10, np.float32))
        with store.read():
            with pytest.raises(rtcore.BusyError, match="already holds a pin"):
                store.pin()
    with pytest.raises(rtcore.ClosedError, match="is closed"):
        store.version
    with pytest.raises(FileNotFoundError):
        ParamStore.attach("rtcore-no-such-store")


def test_pinned_buffer_is_never_overwritten_and_publish_skips_when_none_is_free():
    with ParamStore(64, buffers=2) as store:
        store.publish(np.full(64, 1, np.float32))
        with store.read() as (version, view):
            assert store.publish(np.full(64, 2, np.float32)) == 2  # the other buffer
            assert store.publish(np.full(64, 3, np.float32)) == -1  # ours is pinned, the other is the newest
            assert store.stats()["skipped_no_buffer"] == 1
            assert version == 1 and (view == 1).all()
        assert store.publish(np.full(64, 3, np.float32)) == 3


def test_publish_waits_for_a_buffer_within_its_timeout():
    with ParamStore(64, buffers=2) as store:
        store.publish(np.full(64, 1, np.float32))
        store.pin()
        store.publish(np.full(64, 2, np.float32))
        timer = threading.Timer(0.05, store.unpin)
        timer.start()
        try:
            assert store.publish(np.full(64, 3, np.float32), timeout=10.0) == 3
        finally:
            timer.join()


def test_attach_and_pickle_share_the_store():
    with ParamStore(32, dtype="float16", buffers=4, max_readers=8) as store:
        store.publish(np.arange(32, dtype=np.float16))
        other = pickle.loads(pickle.dumps(store))
        assert not other.owner and other.name == store.name
        assert (other.numel, other.buffers, other.max_readers, other.dtype) == (32, 4, 8, np.float16)
        with other.read() as (version, view):
            assert version == 1
            np.testing.assert_array_equal(view, np.arange(32, dtype=np.float16))
        other.close()


def test_bind_flat_takes_out_and_loads_parameters():
    torch.manual_seed(0)
    a, b = build_model("nature:k=1", 1, 4), build_model("nature:k=1", 1, 4)
    flat = bind_flat(a).detach().clone()
    assert flat.shape == (module_numel(a),)
    bind_flat(b).copy_(flat)
    x = example_input(a, 2)
    torch.testing.assert_close(a(x), b(x))
    with pytest.raises(ValueError, match="expected"):
        bind_flat(b, flat[:-1])


@pytest.mark.parametrize("backend", ["eager", "script", "export"])
def test_bound_module_runs_on_shared_memory_with_no_copy(backend):
    torch.manual_seed(0)
    learner = build_model("impala:k=0.5", 2, 5)
    worker = load_for_inference(build_model("impala:k=0.5", 2, 5), "cpu", backend=backend)
    x = example_input(learner, 3)
    with ParamStore.for_module(learner) as store, torch.no_grad():
        assert store.version == 1
        reader = ParamReader(store, worker)
        for step in range(3):
            with reader.pinned() as version:
                assert version == store.version
                torch.testing.assert_close(worker(x), learner(x))
                # zero copy: every parameter lives inside the pinned buffer of the store
                lo = store.buffer_address(0)
                hi = lo + store.buffer_stride * store.buffers
                assert all(lo <= p.data_ptr() < hi for p in worker.parameters())
            for p in learner.parameters():
                p.add_(0.01 * torch.randn_like(p))
            assert store.publish(learner.parameters()) == step + 2
        with reader.pinned():
            with pytest.raises(rtcore.StateError, match="acquire\\(\\) called twice"):
                reader.acquire()
        reader.close()


def test_bind_flat_checks_the_view():
    model = build_model("nature:k=1", 1, 3)
    with pytest.raises(ValueError, match="expected"):
        bind_flat(model, np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="dtype"):
        bind_flat(model, np.zeros(module_numel(model), np.float64))
    frozen = load_for_inference(model, "cpu", backend="script", frozen=True)
    with pytest.raises(ValueError, match="frozen"):
        ParamStore.for_module(frozen)


# ---- across processes -------------------------------------------------------------------------------------


def _reader(name: str, until: int, results) -> None:
    store = ParamStore.attach(name)
    pins = bad = 0
    last = 0
    deadline = time.monotonic() + 60
    while last < until and time.monotonic() < deadline:
        with store.read(timeout=30) as (version, view):
            if version < last or not (view == version).all():
                bad += 1
            last = version
            pins += 1
    results.put((pins, bad, last))
    store.close()


@pytest.mark.timeout(120)
def test_readers_in_other_processes_never_see_a_mix_of_versions(kill_alive):
    ctx = mp.get_context("spawn")
    versions = 2000
    store = ParamStore(4096, buffers=4)
    results = ctx.Queue()
    procs = [ctx.Process(target=_reader, args=(store.name, versions, results)) for _ in range(2)]
    try:
        for p in procs:
            p.start()
        v = 0
        while v < versions:
            r = store.publish(np.full(4096, v + 1, np.float32))
            if r > 0:
                v = r
        got = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
    finally:
        kill_alive(procs)
        results.close()
        store.close()
    for pins, bad, last in got:
        assert bad == 0
        assert last == versions and pins >= 1


def _pin_and_hang(name: str, pinned) -> None:
    store = ParamStore.attach(name)
    store.pin()
    pinned.set()
    time.sleep(600)


@pytest.mark.timeout(60)
def test_a_reader_killed_while_pinned_does_not_block_publishing():
    ctx = mp.get_context("spawn")
    store = ParamStore(1024, buffers=2)
    store.publish(np.full(1024, 1, np.float32))
    pinned = ctx.Event()
    child = ctx.Process(target=_pin_and_hang, args=(store.name, pinned))
    try:
        child.start()
        assert pinned.wait(30)
        assert store.publish(np.full(1024, 2, np.float32)) == 2
        assert store.publish(np.full(1024, 3, np.float32)) == -1  # the live child pins version 1's buffer
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        assert child.exitcode == -signal.SIGKILL
        assert store.publish(np.full(1024, 3, np.float32)) == 3
        assert store.stats()["reclaimed_readers"] == 1
        with store.read() as (version, view):
            assert version == 3 and (view == 3).all()
    finally:
        if child.is_alive():
            child.kill()
            child.join()
        store.close()


# ---- CUDA (skipped where there is no GPU) -----------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_reader_copies_each_new_version_to_the_device():
    torch.manual_seed(0)
    learner = build_model("impala:k=1", 1, 6)
    worker = load_for_inference(build_model("impala:k=1", 1, 6), "cuda", backend="script")
    x = example_input(learner, 2)
    with ParamStore.for_module(learner) as store, torch.no_grad():
        reader = ParamReader(store, worker)
        assert reader.host_registered  # the store's buffers are page-locked: copies are DMA
        assert torch.from_numpy(store.buffer_view(0)).is_pinned()
        for step in range(4):
            assert reader.acquire() == step + 1
            torch.testing.assert_close(worker(x.cuda()).cpu(), learner(x), rtol=1e-4, atol=1e-4)
            assert all(p.is_cuda for p in worker.parameters())
            reader.release()
            for p in learner.parameters():
                p.add_(0.01 * torch.randn_like(p))
            assert store.publish(learner.parameters()) == step + 2
            if step % 2 == 0:
                assert reader.prefetch()  # starts the copy now; the next acquire finishes it
                assert not reader.prefetch()  # one copy in flight at a time
        assert store.stats()["published"] == 5
        reader.close()
