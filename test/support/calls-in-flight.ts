/**
 * Calls of all four RPC kinds that count how often their handlers ran, for
 * the broker topology tests (cluster.test.ts, broker-bridge.test.ts): a
 * TestService that records handler runs per call (named by the
 * {@link CALL_HEADER} request header), streams of numbered messages, and one
 * call of each kind kept in flight across a fault.
 */
import type { Client, HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { TestService } from "../gen/mqrpc/interop/v1/test_pb.js";
import { codeName, describeOutcome, type Outcome, outcome } from "./outcome.js";

/** The request header that names a call, so that handler runs are counted per call. */
export const CALL_HEADER = "x-call";
/** Messages per stream of {@link callsInFlight}, {@link STREAM_INTERVAL_MS} apart: ~4 s of streaming. */
export const STREAM_MESSAGES = 200;
/** Milliseconds between the messages of a stream of {@link callsInFlight}. */
export const STREAM_INTERVAL_MS = 20;

const idOf = (i: number) => new Uint8Array([i & 0xff, i >> 8]);
const indexOf = (body: Uint8Array | undefined) => (body?.[0] ?? 0) | ((body?.[1] ?? 0) << 8);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * TestService counting handler runs per call (the {@link CALL_HEADER}
 * header, "?" without it) in `runs`: unary calls with a `responseSize`
 * wait `unaryMs`; streams number their messages; a client stream whose
 * messages come out of order fails.
 */
export function ledgerService(
  runs: Map<string, number>,
  unaryMs: number,
): Partial<ServiceImpl<typeof TestService>> {
  const ran = (ctx: HandlerContext) => {
    const call = ctx.requestHeader.get(CALL_HEADER) ?? "?";
    runs.set(call, (runs.get(call) ?? 0) + 1);
  };
  return {
    async unaryCall(req, ctx) {
      ran(ctx);
      if (req.responseSize > 0) await sleep(unaryMs);
      return { payload: { body: new Uint8Array(req.responseSize) } };
    },
    async *streamingOutputCall(req, ctx) {
      ran(ctx);
      for (let i = 0; i < req.responseParameters.length; i++) {
        await sleep((req.responseParameters[i]?.intervalUs ?? 0) / 1000);
        yield { payload: { body: idOf(i) } };
      }
    },
    async streamingInputCall(reqs, ctx) {
      ran(ctx);
      let next = 0;
      for await (const r of reqs) {
        if (indexOf(r.payload?.body) !== next) throw new Error(`message ${next} out of order`);
        next++;
      }
      return { aggregatedPayloadSize: next };
    },
    async *fullDuplexCall(reqs, ctx) {
      ran(ctx);
      for await (const r of reqs) yield { payload: { body: r.payload?.body ?? new Uint8Array(0) } };
    },
  };
}

/** Request messages numbered 0..count-1, `intervalMs` apart. */
async function* numbered(count: number, intervalMs: number) {
  for (let i = 0; i < count; i++) {
    if (intervalMs > 0) await sleep(intervalMs);
    yield { payload: { body: idOf(i) } };
  }
}

/** Undefined when `got` is 0..count-1, each once, in order; else what is wrong with it. */
function sequenceProblem(got: readonly number[], count: number): string | undefined {
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== i) return `message ${i} is ${got[i]} (of ${got.length})`;
  }
  return got.length === count ? undefined : `${got.length} of ${count} messages`;
}

/** What {@link everyKind} got back from each kind of call. */
export interface EveryKindResult {
  /** Bytes in the unary response (3 asked). */
  readonly unary: number | undefined;
  /** "whole", or what is wrong with the server stream's sequence. */
  readonly server: string;
  /** Messages the server counted of the client stream. */
  readonly client: number;
  /** "whole", or what is wrong with the bidi stream's echoed sequence. */
  readonly bidi: string;
}

/**
 * One call of each kind, one after the other, each within 15 s: a unary
 * call asking for 3 bytes, then streams of `count` numbered messages.
 * The calls are named `unary`, `server`, `client` and `bidi`, after
 * `${tag}-` when a `tag` is given.
 */
export async function everyKind(
  client: Client<typeof TestService>,
  count: number,
  tag?: string,
): Promise<EveryKindResult> {
  const options = (call: string) => ({
    headers: { [CALL_HEADER]: tag === undefined ? call : `${tag}-${call}` },
    timeoutMs: 15_000,
  });
  const unary = await client.unaryCall({ responseSize: 3 }, options("unary"));
  const streamed: number[] = [];
  for await (const r of client.streamingOutputCall(
    { responseParameters: Array.from({ length: count }, () => ({ size: 2 })) },
    options("server"),
  )) {
    streamed.push(indexOf(r.payload?.body));
  }
  const uploaded = await client.streamingInputCall(numbered(count, 0), options("client"));
  const echoed: number[] = [];
  for await (const r of client.fullDuplexCall(numbered(count, 0), options("bidi"))) {
    echoed.push(indexOf(r.payload?.body));
  }
  return {
    unary: unary.payload?.body.byteLength,
    server: sequenceProblem(streamed, count) ?? "whole",
    client: uploaded.aggregatedPayloadSize,
    bidi: sequenceProblem(echoed, count) ?? "whole",
  };
}

/** The calls {@link callsInFlight} started. */
export interface CallsInFlight {
  /** Resolves once the server stream has delivered `killAt` messages. */
  readonly started: Promise<void>;
  /** The three streams by name (`server`, `client`, `bidi`): "whole", or what is wrong. */
  readonly calls: Record<string, Promise<Outcome<string>>>;
  /** Four unary calls, started once `started` resolves. */
  readonly unaries: Promise<Outcome<string>[]>;
}

/**
 * One call of each kind in flight, each with a deadline of `deadlineMs`
 * and named `${tag}-server`, `-client`, `-bidi`, `-unary1` to `-unary4`:
 * streams of {@link STREAM_MESSAGES} from the first client (server and
 * bidi) and the second (client stream), and once the server stream has
 * delivered `killAt` messages, four unary calls alternating between the
 * clients, whose handlers (1.5 s with {@link ledgerService}`(runs, 1500)`)
 * span a fault started then.
 */
export function callsInFlight(
  clients: readonly [Client<typeof TestService>, Client<typeof TestService>],
  tag: string,
  killAt: number,
  deadlineMs: number,
): CallsInFlight {
  const [one, two] = clients;
  const options = (call: string) => ({
    timeoutMs: deadlineMs,
    headers: { [CALL_HEADER]: `${tag}-${call}` },
  });
  let reached!: () => void;
  const started = new Promise<void>((resolve) => {
    reached = resolve;
  });
  const serverStream = async () => {
    const got: number[] = [];
    for await (const res of one.streamingOutputCall(
      {
        responseParameters: Array.from({ length: STREAM_MESSAGES }, () => ({
          size: 2,
          intervalUs: STREAM_INTERVAL_MS * 1000,
        })),
      },
      options("server"),
    )) {
      got.push(indexOf(res.payload?.body));
      if (got.length === killAt) reached();
    }
    return sequenceProblem(got, STREAM_MESSAGES) ?? "whole";
  };
  const clientStream = async () => {
    const res = await two.streamingInputCall(
      numbered(STREAM_MESSAGES, STREAM_INTERVAL_MS),
      options("client"),
    );
    return res.aggregatedPayloadSize === STREAM_MESSAGES
      ? "whole"
      : `${res.aggregatedPayloadSize} of ${STREAM_MESSAGES}`;
  };
  const bidi = async () => {
    const got: number[] = [];
    for await (const res of one.fullDuplexCall(
      numbered(STREAM_MESSAGES, STREAM_INTERVAL_MS),
      options("bidi"),
    )) {
      got.push(indexOf(res.payload?.body));
    }
    return sequenceProblem(got, STREAM_MESSAGES) ?? "whole";
  };
  const calls: Record<string, Promise<Outcome<string>>> = {
    server: outcome(serverStream()),
    client: outcome(clientStream()),
    bidi: outcome(bidi()),
  };
  const unaries = started.then(() =>
    Promise.all(
      [1, 2, 3, 4].map((i) =>
        outcome(
          (i % 2 === 1 ? one : two)
            .unaryCall({ responseSize: i }, options(`unary${i}`))
            .then((r) => (r.payload?.body.byteLength === i ? "whole" : "wrong size")),
        ),
      ),
    ),
  );
  return { started, calls, unaries };
}

/**
 * How each call of `flight` ended, by name (`server`, `client`, `bidi`,
 * `unary1` to `unary4`): "whole" for one that completed with everything in
 * it, what is wrong for one that completed without, else its status's name.
 * Logs each ending after `label`.
 */
export async function endings(
  flight: CallsInFlight,
  label: string,
): Promise<Record<string, string>> {
  const result: Record<string, string> = {};
  const all: Array<[string, Outcome<string>]> = [
    ...(await Promise.all(
      Object.entries(flight.calls).map(async ([k, p]) => [k, await p] as [string, Outcome<string>]),
    )),
    ...(await flight.unaries).map((o, i) => [`unary${i + 1}`, o] as [string, Outcome<string>]),
  ];
  for (const [name, o] of all) {
    result[name] = o.ok ? (o.value ?? "") : codeName(o.code);
    console.log(`${label}, ${name}: ${o.ok ? `${o.value}, ` : ""}${describeOutcome(o)}`);
  }
  return result;
}
