"""The model replica's Batcher (no Ray): batches are cut when the model is free, not on arrival."""

import asyncio
import time

import pytest

from pareto_ray.serving.app import Batcher


def _run_model(sizes: list[int], seconds: float = 0.1):
    def run(items):
        sizes.append(len(items))
        time.sleep(seconds)  # the forward, in the batcher's thread
        return [f"answer {i}" for i in items]
    return run


def test_requests_arriving_during_a_batch_form_the_next_one():
    sizes: list[int] = []
    batcher = Batcher(_run_model(sizes), max_batch_size=4, wait_s=0.005)

    async def main():
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.03)  # the first batch (one request) is running
        rest = [asyncio.create_task(batcher.submit(i)) for i in range(1, 10)]
        return await asyncio.gather(first, *rest)

    answers = asyncio.run(main())
    assert answers == [f"answer {i}" for i in range(10)]
    assert sizes == [1, 4, 4, 1]  # @serve.batch would cut the nine late ones into batches as they arrived


def test_an_error_reaches_every_caller_of_its_batch_and_the_next_batch_still_runs():
    calls = []

    def run(items):
        calls.append(list(items))
        if len(calls) == 1:
            raise RuntimeError("forward failed")
        return items

    batcher = Batcher(run, max_batch_size=8, wait_s=0.01)

    async def main():
        failed = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
        return failed, await batcher.submit(7)

    failed, ok = asyncio.run(main())
    assert all(isinstance(e, RuntimeError) for e in failed) and ok == 7


def test_a_cancelled_caller_is_dropped_before_its_batch_runs():
    sizes: list[int] = []
    batcher = Batcher(_run_model(sizes, 0.05), max_batch_size=8, wait_s=0.005)

    async def main():
        first = asyncio.create_task(batcher.submit(0))
        await asyncio.sleep(0.02)
        gone = asyncio.create_task(batcher.submit(1))
        kept = asyncio.create_task(batcher.submit(2))
        await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await first, await kept

    assert asyncio.run(main()) == ("answer 0", "answer 2")
    assert sizes == [1, 1]
