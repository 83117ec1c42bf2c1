"""Keep one vLLM engine busy across shard boundaries.

An op maps a shard with one or more `llm.generate` or `llm.chat` calls. Run one shard after
another, the engine drains at the end of each: the last long answers decode in a nearly empty
batch while the next shard waits. `EngineFeed` stands in for the `LLM` while several shards are in
flight, each in a thread of its own: their `generate` and `chat` calls become requests of the same
engine, which one thread (the one that built the engine, in `run`) adds and steps, and each call
returns when its own requests are finished. Samples do not change: every request carries its own
seed (engine.request_seed), so which requests share a batch does not matter.
"""
from __future__ import annotations

import copy
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable


class FeedClosed(RuntimeError):
    pass


class _Call:
    """One `chat` or `generate` call of a shard thread: how to add its requests to the engine and,
    once all are finished, their outputs."""

    def __init__(self, enqueue: Callable[[Any], list[str]]):
        self.enqueue = enqueue
        self.outputs: list[Any] = []
        self.remaining = 0
        self.error: BaseException | None = None
        self.done = threading.Event()

    def finish(self, error: BaseException | None = None) -> None:
        self.error = error
        self.done.set()


def generating_engine(resource: Any) -> bool:
    """Whether `resource` is a vLLM `LLM` that generates (pooling engines score in one pass)."""
    config = getattr(resource, "model_config", None)
    return (hasattr(resource, "enqueue_chat") and hasattr(resource, "llm_engine")
            and getattr(config, "runner_type", None) == "generate")


class EngineFeed:
    def __init__(self, llm: Any):
        self.llm = llm
        self.engine = llm.llm_engine
        self.calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()  # None: a shard finished
        # request id as outputs carry it -> its call, its position in the call, the engine's own id
        self.waiting: dict[str, tuple[_Call, int, str]] = {}
        self.lock = threading.Lock()
        self.closed: BaseException | None = None
        self.local = threading.local()

    @classmethod
    def over(cls, resource: Any) -> tuple["EngineFeed", Any] | None:
        """(feed, the resource to give the op) when `resource` is a generating vLLM engine or holds
        one as `.llm` (the vLLM translator); None for anything else (seq2seq, COMET, pooling)."""
        if generating_engine(resource):
            feed = cls(resource)
            return feed, feed
        inner = getattr(resource, "llm", None)
        if inner is not None and generating_engine(inner):
            feed, wrapped = cls(inner), copy.copy(resource)
            wrapped.llm = feed
            return feed, wrapped
        return None

    # What ops read from an LLM besides `generate` and `chat`: the engine's config (max_model_len) and a tokenizer.
    @property
    def llm_engine(self) -> Any:
        return self.engine

    @property
    def model_config(self) -> Any:
        return self.llm.model_config

    def get_tokenizer(self) -> Any:
        """A tokenizer for this thread alone: one Rust tokenizer used by two threads at once can
        fail ("Already borrowed"), and the engine's own renders prompts in the stepping thread."""
        tokenizer = getattr(self.local, "tokenizer", None)
        if tokenizer is None:
            tokenizer = self.local.tokenizer = copy.deepcopy(self.llm.get_tokenizer())
        return tokenizer

    def chat(self, messages: Any, sampling_params: Any = None, use_tqdm: bool = False, **kwargs: Any) -> list[Any]:
        """`LLM.chat` from a shard thread: the outputs in the order of `messages`."""
        return self._wait(_Call(lambda llm: llm.enqueue_chat(messages, sampling_params, use_tqdm=False, **kwargs)))

    def generate(self, prompts: Any, sampling_params: Any = None, use_tqdm: bool = False, **kwargs: Any) -> list[Any]:
        """`LLM.generate` from a shard thread: the outputs in the order of `prompts`."""
        return self._wait(_Call(lambda llm: llm.enqueue(prompts, sampling_params, use_tqdm=False, **kwargs)))

    def _wait(self, call: _Call) -> list[Any]:
        with self.lock:
            if self.closed is not None:
                raise FeedClosed(f"the engine stopped: {self.closed}") from self.closed
            self.calls.put(call)
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.outputs

    def run(self, tasks: Iterable[Callable[[], Any]], in_flight: int) -> None:
        """Run `tasks` (one per shard) in up to `in_flight` threads, adding and stepping their
        requests here. After a task fails no new one starts; those in flight finish (their shards
        are kept) and the first error is raised."""
        pending, running = iter(tasks), set[Future]()
        error: BaseException | None = None
        with ThreadPoolExecutor(in_flight, thread_name_prefix="shard") as pool:
            try:
                while True:
                    while error is None and len(running) < in_flight and (task := next(pending, None)) is not None:
                        future = pool.submit(task)
                        future.add_done_callback(lambda _: self.calls.put(None))  # wakes an idle loop
                        running.add(future)
                    for future in [f for f in running if f.done()]:
                        running.discard(future)
                        if future.exception() is not None and error is None:
                            error = future.exception()
                    if not running:  # every call of a finished task has returned
                        break
                    self._add_calls(block=not self.engine.has_unfinished_requests())
                    if self.engine.has_unfinished_requests():
                        self._step()
            finally:
                self._close(error or FeedClosed("the stage stopped"))
        if error is not None:
            raise error

    def _add_calls(self, block: bool) -> None:
        """Add the requests of every call waiting (after waiting for a call or a finished task
        when `block`)."""
        while True:
            try:
                call = self.calls.get(block=block)
            except queue.Empty:
                return
            block = False
            if call is None:
                continue
            try:
                ids = call.enqueue(self.llm)
            except Exception as error:  # e.g. vLLM rejects a prompt: that shard fails, not the engine
                call.finish(error)
                continue
            call.outputs, call.remaining = [None] * len(ids), len(ids)
            if not ids:
                call.finish()
            for index, internal_id in enumerate(ids):
                # vLLM returns its internal id ("<id>-<8 random characters>"); outputs carry <id>,
                # the LLM's counter, which has no "-".
                self.waiting[internal_id.rsplit("-", 1)[0]] = (call, index, internal_id)

    def _step(self) -> None:
        try:
            outputs = self.engine.step()
        except BaseException as error:
            self._close(error)
            raise
        for output in outputs:
            if not output.finished:
                continue
            call, index, _ = self.waiting.pop(output.request_id)
            call.outputs[index] = output
            call.remaining -= 1
            if call.remaining == 0:
                call.finish()

    def _close(self, error: BaseException) -> None:
        """No more calls: every call not finished yet fails with `error`, so no thread waits forever."""
        with self.lock:
            if self.closed is None:
                self.closed = error
        stranded = {id(call): call for call, _, _ in self.waiting.values()}
        if self.waiting:
            try:
                self.engine.abort_request([internal for _, _, internal in self.waiting.values()], internal=True)
            except Exception:  # the engine died: nothing left to abort
                pass
            self.waiting.clear()
        while True:
            try:
                call = self.calls.get(block=False)
            except queue.Empty:
                break
            if call is not None:
                stranded[id(call)] = call
        for call in stranded.values():
            call.finish(FeedClosed(f"the engine stopped: {error}"))
