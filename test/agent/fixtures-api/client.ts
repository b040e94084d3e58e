/**
 * A standard gRPC client (@grpc/grpc-js + @grpc/proto-loader, loading the server's own proto text through
 * its JSON descriptor) and helpers to read streams in tests.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { workloadProtoJson } from "../../../host/agent/workload-api/proto.ts";

export type Msg = Record<string, unknown>;

export interface Clients {
  workload: grpc.Client & Record<string, (...args: unknown[]) => unknown>;
  sds: grpc.Client & Record<string, (...args: unknown[]) => unknown>;
  close(): void;
}

function loadPackage(): grpc.GrpcObject {
  const def = protoLoader.fromJSON(workloadProtoJson() as Parameters<typeof protoLoader.fromJSON>[0], {
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(def);
}

let pkg: grpc.GrpcObject | undefined;

export function connect(socket: string): Clients {
  pkg ??= loadPackage();
  const Workload = pkg["SpiffeWorkloadAPI"] as grpc.ServiceClientConstructor;
  const envoy = pkg["envoy"] as grpc.GrpcObject;
  const secret = ((envoy["service"] as grpc.GrpcObject)["secret"] as grpc.GrpcObject)[
    "v3"
  ] as grpc.GrpcObject;
  const Sds = secret["SecretDiscoveryService"] as grpc.ServiceClientConstructor;
  const creds = grpc.credentials.createInsecure();
  const workload = new Workload(`unix:${socket}`, creds) as Clients["workload"];
  const sds = new Sds(`unix:${socket}`, creds) as Clients["sds"];
  return {
    workload,
    sds,
    close() {
      workload.close();
      sds.close();
    },
  };
}

export function securityHeader(): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set("workload.spiffe.io", "true");
  return md;
}

/** A unary call as a promise. */
export function unary(
  client: Clients["workload"],
  method: string,
  req: Msg,
  md = securityHeader(),
  options: grpc.CallOptions = {},
): Promise<Msg> {
  return new Promise((resolve, reject) => {
    (
      client[method] as (
        r: Msg,
        m: grpc.Metadata,
        o: grpc.CallOptions,
        cb: (e: grpc.ServiceError | null, v: Msg) => void,
      ) => void
    )(req, md, options, (err, value) => (err ? reject(err) : resolve(value)));
  });
}

/** Reads messages of a client stream one at a time; `status` resolves with the final status. */
export class StreamReader {
  private readonly items: Msg[] = [];
  private waiter: (() => void) | undefined;
  error: grpc.ServiceError | undefined;
  ended = false;
  readonly status: Promise<grpc.StatusObject>;
  readonly call: grpc.ClientReadableStream<Msg> | grpc.ClientDuplexStream<Msg, Msg>;

  constructor(call: grpc.ClientReadableStream<Msg> | grpc.ClientDuplexStream<Msg, Msg>) {
    this.call = call;
    call.on("data", (m: Msg) => {
      this.items.push(m);
      this.poke();
    });
    call.on("error", (e: grpc.ServiceError) => {
      this.error = e;
      this.poke();
    });
    call.on("end", () => {
      this.ended = true;
      this.poke();
    });
    this.status = new Promise((resolve) => call.on("status", resolve));
  }

  /** The next message; rejects on stream error, end, or after `ms`. */
  async next(ms = 3000): Promise<Msg> {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = this.items.shift();
      if (m) return m;
      if (this.error) throw this.error;
      if (this.ended) throw new Error("stream ended");
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no message within ${ms} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  /** Resolves true if no message arrives within `ms`. */
  async quiet(ms = 300): Promise<boolean> {
    await new Promise((r) => setTimeout(r, ms));
    return this.items.length === 0;
  }

  /** The error the stream ended with (waits for it). */
  async failure(ms = 3000): Promise<grpc.ServiceError> {
    const deadline = Date.now() + ms;
    while (!this.error) {
      if (Date.now() > deadline) throw new Error("stream did not fail");
      await new Promise((r) => setTimeout(r, 10));
    }
    return this.error;
  }

  private poke(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }
}

export function serverStream(
  client: Clients["workload"],
  method: string,
  req: Msg = {},
  md = securityHeader(),
  options: grpc.CallOptions = {},
): StreamReader {
  const call = (
    client[method] as (r: Msg, m: grpc.Metadata, o: grpc.CallOptions) => grpc.ClientReadableStream<Msg>
  )(req, md, options);
  return new StreamReader(call);
}

export { grpc };
