/**
 * Upstream gRPC servers in their own processes, for the gateway tests: the
 * Python one (interop_upstream.py on Debian's python3-grpcio) and the
 * grpc-js one (grpc-js-upstream.ts). Each prints JSON lines; the first,
 * `{"event":"listening","port":N}`, says it serves.
 */
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll } from "vitest";
import { LineChild } from "../../../../test/support/line-child.js";
import type { GrpcJsUpstreamConfig } from "./grpc-js-upstream.js";

export type { GrpcJsUpstreamConfig };

const REPO = fileURLToPath(new URL("../../../../", import.meta.url));
const PYTHON_SCRIPT = fileURLToPath(new URL("./interop_upstream.py", import.meta.url));
const GRPC_JS_SCRIPT = fileURLToPath(new URL("./grpc-js-upstream.ts", import.meta.url));
/** Debian's python3-grpcio is installed for the system Python, not for one on PATH. */
const PYTHON = process.env.MQRPC_TEST_PYTHON ?? "/usr/bin/python3";

/** One JSON line of an upstream's stdout. */
export type UpstreamEvent =
  | { readonly event: "listening"; readonly port: number }
  | { readonly event: "started"; readonly method: string }
  | { readonly event: "progress"; readonly method: string; readonly written: number }
  | {
      readonly event: "done";
      readonly method: string;
      /** The caller (here, the gateway) cancelled the call. */
      readonly cancelled: boolean;
    };

/** A scratch directory with the interop schema as a buf image, for the Python upstream and `descriptorSet`. */
export interface InteropImage {
  readonly dir: string;
  /** Path of `buf build -o … --path proto/mqrpc/interop`. */
  readonly path: string;
  remove(): Promise<void>;
}

/** Builds the interop schema's FileDescriptorSet with the buf CLI. */
export async function buildInteropImage(): Promise<InteropImage> {
  const dir = await mkdtemp(join(tmpdir(), "mqrpc-gateway-"));
  const path = join(dir, "interop.binpb");
  await promisify(execFile)(
    join(REPO, "node_modules/.bin/buf"),
    ["build", "-o", path, "--path", "proto/mqrpc/interop"],
    { cwd: REPO },
  );
  return { dir, path, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** A running upstream server process. */
export class UpstreamProcess {
  port = 0;

  private constructor(
    private readonly child: LineChild<UpstreamEvent>,
    private readonly listen: string,
  ) {}

  /**
   * Starts the Python upstream on `listen` (`127.0.0.1:0` or `unix:/path`)
   * and waits until it serves; `gzip` compresses its responses.
   */
  static python(
    image: InteropImage,
    listen = "127.0.0.1:0",
    options: { gzip?: boolean } = {},
  ): Promise<UpstreamProcess> {
    const args = [PYTHON_SCRIPT, image.path, listen, ...(options.gzip === true ? ["gzip"] : [])];
    const child = LineChild.spawn<UpstreamEvent>(PYTHON, args, REPO, "python upstream");
    return new UpstreamProcess(child, listen).started();
  }

  /** Starts the grpc-js upstream and waits until it serves. */
  static grpcJs(config: GrpcJsUpstreamConfig): Promise<UpstreamProcess> {
    const child = LineChild.tsx<UpstreamEvent>(GRPC_JS_SCRIPT, config, "grpc-js upstream");
    return new UpstreamProcess(child, config.listen).started();
  }

  private async started(): Promise<this> {
    try {
      const listening = await this.child.until((e) => e.event === "listening", 30_000);
      this.port = listening.event === "listening" ? listening.port : 0;
    } catch (e) {
      await this.child.kill();
      throw e;
    }
    return this;
  }

  /** The URL the gateway's `upstreams[].url` takes. */
  get url(): string {
    return this.listen.startsWith("unix:") ? this.listen : `http://127.0.0.1:${this.port}`;
  }

  /** A mark for {@link until}: events from now on. */
  mark(): number {
    return this.child.mark();
  }

  /** The first event from `from` (a {@link mark}) that satisfies `predicate`. */
  until(predicate: (e: UpstreamEvent) => boolean, ms = 15_000, from = 0): Promise<UpstreamEvent> {
    return this.child.until(predicate, ms, from);
  }

  /** The last `progress` count reported since `from` (a {@link mark}), 0 when none. */
  written(from = 0): number {
    let written = 0;
    for (const e of this.child.events.slice(from)) if (e.event === "progress") written = e.written;
    return written;
  }

  /** SIGKILL, as a crash; waits for the exit. */
  kill(): Promise<void> {
    return this.child.kill();
  }
}

/** The Python upstream with the interop image as its schema, for a whole test file. */
export interface PythonInterop {
  readonly image: InteropImage;
  readonly python: UpstreamProcess;
  /** The gateway's `upstreams` entry for it: TestService only, its schema from the image. */
  readonly upstream: { url: string; descriptorSet: string; services: string[] };
}

/**
 * Builds the interop image and starts the Python upstream on
 * `127.0.0.1:0` before the file's tests; kills it and removes the image
 * after them. The fields are there from the first test (and `beforeAll`
 * hooks registered later) on.
 */
export function pythonInteropForFile(): PythonInterop {
  let image: InteropImage | undefined;
  let python: UpstreamProcess | undefined;
  beforeAll(async () => {
    image = await buildInteropImage();
    python = await UpstreamProcess.python(image);
  });
  afterAll(async () => {
    await python?.kill();
    await image?.remove();
  });
  const started = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error("the Python upstream has not started");
    return value;
  };
  return {
    get image() {
      return started(image);
    },
    get python() {
      return started(python);
    },
    get upstream() {
      return {
        url: started(python).url,
        descriptorSet: started(image).path,
        services: ["mqrpc.interop.v1.TestService"],
      };
    },
  };
}
