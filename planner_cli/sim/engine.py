"""One replica as a continuous-batching engine, scheduled as vLLM or as SGLang does.

vLLM (mixed): each iteration first gives every running decode one token, then prefill chunks to
admitted requests still prefilling, then admits waiting requests first come first served, all
within a token budget (max-num-batched-tokens) and a sequence cap (max-num-seqs).
SGLang (prefill first): while requests are prefilling or can be admitted, an iteration holds
prefill chunks only, within the budget (its chunked-prefill size), and the running decodes
wait; otherwise it is a decode iteration. With --scheduler-recv-interval N (SGLang) the
scheduler takes newly sent requests in only every N decode iterations, at once after a prefill
batch, and whenever it has nothing to run; until then they wait outside it. KV-cache capacity is
counted in tokens; a request is admitted when its whole prompt fits beside the running ones,
and when the running decodes need more than is free, the latest admitted request is preempted
and recomputed later (its prompt plus what it generated is prefilled again).

Events scale with requests, not tokens: between two events (an arrival, a finished prefill, a
completion, the cache filling up) the batch of decodes does not change, so the whole run of
decode iterations is advanced at once with the exact closed-form sum of CostModel.
Decoding requests are not touched per iteration: a replica-wide tick counts decode iterations
and each request's progress is its tick offset.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from functools import partial

from planner_cli.perf.fast import decode_until
from planner_cli.perf.memory import DEFAULT_MAX_NUM_BATCHED_TOKENS, DEFAULT_MAX_NUM_SEQS
from planner_cli.perf.model import CostModel

INF = math.inf


class Req:
    """One visit of a request to a stage."""

    __slots__ = ("rid", "arrival", "prompt", "output", "target", "prefilled", "generated",
                 "joined_tick", "epoch", "first_token", "finish", "scheduled", "preemptions",
                 "order", "replica")

    def __init__(self, rid: int, arrival: float, prompt: int, output: int) -> None:
        self.rid, self.arrival, self.prompt, self.output = rid, arrival, prompt, output
        self.target = prompt  # tokens to prefill (prompt, plus generated ones on recompute)
        self.prefilled = 0
        self.generated = 0  # tokens generated when it joined the decode set
        self.joined_tick = -1  # tick at which it joined the decode set; -1: not decoding
        self.epoch = 0  # bumped on preemption, to drop stale heap entries
        self.first_token = INF
        self.finish = INF
        self.scheduled = INF
        self.preemptions = 0
        self.order = 0
        self.replica = -1


class Replica:
    """A continuous-batching engine; advance it lazily with `advance_until`."""

    def __init__(self, cost: CostModel, kv_capacity_tokens: int,
                 max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS,
                 max_num_seqs: int = DEFAULT_MAX_NUM_SEQS,
                 index: int = 0, prefill_first: bool = False,
                 state_tokens: int = 0, recv_interval: int = 1) -> None:
        if max_num_batched_tokens < max_num_seqs and not prefill_first:
            raise ValueError("max_num_batched_tokens must be >= max_num_seqs")
        if recv_interval < 1:
            raise ValueError("recv_interval must be >= 1")
        self.cost = cost
        # a run of decodes cut where an iteration would start after a time (the cost's own
        # fused form where it has one)
        self._until = getattr(cost, "decode_until", None) or partial(decode_until, cost)
        self.capacity = kv_capacity_tokens
        self.budget = max_num_batched_tokens
        self.max_seqs = max_num_seqs
        self.index = index
        self.prefill_first = prefill_first
        self.state = state_tokens  # KV tokens a running sequence holds besides its context
        self.recv_interval = recv_interval
        self.inbox: deque[Req] = deque()  # sent, not yet taken in (recv_interval > 1)
        self._since_recv = 0  # decode iterations since the scheduler last took requests in
        self.clock = 0.0
        self.waiting: deque[Req] = deque()
        self.prefilling: list[Req] = []
        self.decoding: dict[int, Req] = {}  # id(req) -> req
        self.heap: list[tuple[int, int, int, Req]] = []  # (finish tick, order, epoch, req)
        self.tick = 0
        self.dec_ctx = 0  # KV tokens of the decoding requests
        self.used = 0  # KV tokens in use
        self.admitted = 0
        self.done: list[Req] = []
        self.rejected: list[Req] = []
        self.iterations = 0
        self.busy_s = 0.0
        self.kv_token_seconds = 0.0  # ∫ used dt, for the mean KV utilisation

    # ------------------------------------------------------------ bookkeeping

    @property
    def outstanding(self) -> int:
        return len(self.inbox) + len(self.waiting) + len(self.prefilling) + len(self.decoding)

    def _ctx(self, r: Req) -> int:
        return r.target + (self.tick - r.joined_tick)

    def _preempt_latest(self) -> bool:
        """Free the KV of the latest admitted running request and queue it for recompute."""
        candidates = list(self.decoding.values()) + self.prefilling
        if not candidates:
            return False
        victim = max(candidates, key=lambda r: r.order)
        if victim.joined_tick >= 0:
            ctx = self._ctx(victim)
            del self.decoding[id(victim)]
            self.dec_ctx -= ctx
            self.used -= ctx + self.state
            victim.generated += self.tick - victim.joined_tick
            victim.joined_tick = -1
        else:
            self.prefilling.remove(victim)
            self.used -= victim.prefilled + self.state
        victim.epoch += 1
        victim.target = victim.prompt + victim.generated
        victim.prefilled = 0
        victim.preemptions += 1
        self.waiting.appendleft(victim)
        return True

    def _pop_completions(self, at: float) -> None:
        heap, decoding, tick, done = self.heap, self.decoding, self.tick, self.done
        while heap and heap[0][0] <= tick:
            _, _, epoch, r = heapq.heappop(heap)
            if epoch != r.epoch or id(r) not in decoding:
                continue  # preempted since this entry was pushed
            ctx = r.target + (tick - r.joined_tick)  # _ctx
            del decoding[id(r)]
            self.dec_ctx -= ctx
            self.used -= ctx + self.state
            r.generated = r.output
            r.finish = at  # _finish
            done.append(r)

    def submit(self, r: Req) -> None:
        """Queue a request that arrives now (call advance_until(arrival) first)."""
        if r.prompt + 1 + self.state > self.capacity:
            r.replica = self.index
            self.rejected.append(r)  # can never fit the KV cache
            return
        if not self.outstanding:
            self.clock = max(self.clock, r.arrival)
        r.replica = self.index
        if self.recv_interval > 1 and (self.waiting or self.prefilling or self.decoding):
            self.inbox.append(r)  # taken in at the scheduler's next look (_received)
            return
        self.waiting.append(r)

    def _received(self, decodes: int) -> None:
        """After `decodes` decode iterations (0: after a prefill batch), take what was sent in
        where SGLang's scheduler would: once recv_interval decode iterations have passed since
        it last looked, after any prefill batch, or when it has nothing left to run."""
        seen = self._since_recv + decodes
        idle = not (self.waiting or self.prefilling or self.decoding)
        if decodes == 0 or idle or seen >= self.recv_interval:
            self.waiting.extend(self.inbox)
            self.inbox.clear()
            # a run of decodes may pass several looks: the count restarts at the last one
            seen = seen % self.recv_interval if decodes and not idle else 0
        self._since_recv = seen

    # ------------------------------------------------------------ stepping

    def advance_until(self, t: float) -> None:
        """Run every iteration that starts before time t."""
        # _step inlined (this loop is the simulator's hottest): the queues are only ever
        # changed in place, so they are looked up once
        waiting, prefilling, decoding = self.waiting, self.prefilling, self.decoding
        while self.clock < t and (waiting or prefilling or decoding):
            if (not prefilling and decoding and (not waiting or not self._can_admit())
                    and self._decode_run(t)):
                continue
            self._iteration()

    def step(self) -> bool:
        """One scheduling step: a run of decode iterations up to the next completion (or the
        cache filling up), or one general iteration. False when there is nothing to run."""
        if not self.outstanding:
            return False
        self._step(INF)
        return True

    def _step(self, t: float) -> None:
        # a run of decodes needs no look at the queue when nobody waits
        if not self.prefilling and self.decoding and (not self.waiting or not self._can_admit()):
            if self._decode_run(t):
                return
        self._iteration()

    def _can_admit(self) -> bool:
        if not self.waiting:
            return False
        if len(self.prefilling) + len(self.decoding) >= self.max_seqs:
            return False
        # admission needs room for the whole prompt beside the decodes' next tokens (vLLM
        # allocates a prompt's blocks on admission); less would be preempted again at once
        need = self.waiting[0].target + self.state
        return need <= self.capacity - self.used - len(self.decoding)

    def _decode_run(self, t: float) -> bool:
        """Advance a run of pure-decode iterations; False when a normal step is needed."""
        decoding = self.decoding
        b = len(decoding)
        used = self.used
        n_kv = (self.capacity - used) // b
        if n_kv < 1:
            return False
        heap = self.heap
        top = heap[0]
        while top[2] != top[3].epoch or id(top[3]) not in decoding:
            heapq.heappop(heap)  # drop stale entries so the top is a live request
            top = heap[0]
        tick = self.tick
        n = min(top[0] - tick, n_kv)
        if self.inbox:  # stop where the scheduler looks for them
            n = min(n, self.recv_interval - self._since_recv)
        ctx = self.dec_ctx
        n, dt = self._until(b, ctx, n, t - self.clock)
        self.kv_token_seconds += dt * (used + b * (n + 1) / 2.0)
        self.tick = tick = tick + n
        self.dec_ctx = ctx + n * b
        self.used = used + n * b
        self.clock += dt
        self.busy_s += dt
        self.iterations += n
        if heap[0][0] <= tick:
            self._pop_completions(self.clock)
        if self.recv_interval > 1:
            self._received(n)
        return True

    def _iteration(self) -> None:
        """One general iteration: decodes, prefill chunks, admissions."""
        decoding, prefilling, waiting = self.decoding, self.prefilling, self.waiting
        capacity, state = self.capacity, self.state
        # the running decodes need one KV token each; preempt until they fit
        while decoding and self.used + len(decoding) > capacity:
            if not self._preempt_latest():
                break
        b = len(decoding)
        if self.prefill_first and (prefilling or self._can_admit()):
            b = 0  # a prefill batch: the decodes wait for it
        budget = self.budget - b
        free = capacity - self.used - b
        chunks: list[tuple[Req, int]] = []
        for r in prefilling:
            if budget <= 0 or free <= 0:
                break
            chunk = min(r.target - r.prefilled, budget, free)
            chunks.append((r, chunk))
            budget -= chunk
            free -= chunk
        while (waiting and budget > 0 and free > 0
               and len(prefilling) + len(decoding) < self.max_seqs):
            r = waiting[0]
            if r.target + state > capacity - b:
                # it cannot fit even alone beside the decodes; wait for completions
                if decoding or prefilling:
                    break
                waiting.popleft()
                self.rejected.append(r)
                continue
            if r.target + state > free:
                break  # wait until its prompt fits beside the running requests
            waiting.popleft()
            free -= state  # its fixed-size state, held while it runs
            self.used += state
            self.admitted += 1
            r.order = self.admitted
            if r.scheduled == INF:
                r.scheduled = self.clock
            prefilling.append(r)
            chunk = min(r.target, budget, free)
            chunks.append((r, chunk))
            budget -= chunk
            free -= chunk
        p = chunks[0][1] if len(chunks) == 1 else sum(c for _, c in chunks)
        if p == 0 and b == 0 and decoding:
            b = len(decoding)  # nothing could be prefilled after all: decode instead
        if p == 0 and b == 0:
            # prefilling requests hold all the KV: recompute the latest later, so the
            # others can go on (the waiting ones that could never fit were rejected above)
            if prefilling:
                self._preempt_latest()
            return
        # the chunks' mean cached prefix (none for a single whole prompt)
        pc = 0.0
        if p and (len(chunks) > 1 or chunks[0][0].prefilled):
            pc = sum(c * r.prefilled for r, c in chunks) / p
        dt = self.cost.time(p, b, self.dec_ctx, pc, len(chunks))
        end = self.clock + dt
        self.kv_token_seconds += dt * self.used
        self.iterations += 1
        self.busy_s += dt
        heap = self.heap
        if b:
            self.tick += 1
            self.dec_ctx += b
            self.used += b
            if heap[0][0] <= self.tick:
                self._pop_completions(end)
        for r, chunk in chunks:
            r.prefilled += chunk
            self.used += chunk
            if r.prefilled >= r.target:
                prefilling.remove(r)
                r.generated += 1  # the iteration that completes the prompt samples a token
                if r.first_token == INF:
                    r.first_token = end
                if r.generated >= r.output:
                    self.used -= r.target + state
                    r.finish = end  # _finish
                    self.done.append(r)
                else:  # _join_decode
                    tick = r.joined_tick = self.tick
                    decoding[id(r)] = r
                    self.dec_ctx += r.target
                    heapq.heappush(heap, (tick + (r.output - r.generated), r.order, r.epoch, r))
        self.clock = end
        if self.recv_interval > 1:
            self._received(0 if p else 1)
