/**
 * How the CLI reaches a server: over a running server's admin socket, or in-process on a server's data
 * directory (offline). Both go through the same admin route table, so they behave identically.
 */
import http from "node:http";
import path from "node:path";
import { systemClock } from "../core/clock.ts";
import { QhxError, ValidationError, errorFromAnswer, parseJsonAnswer } from "../core/errors.ts";
// the offline client loads the server modules on demand (most commands talk to a running server)
import type { ServerCore } from "../server/core.ts";

export interface AdminClient {
  call<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<T>;
  close(): Promise<void>;
}

export class SocketClient implements AdminClient {
  readonly socketPath: string;
  private readonly agent = new http.Agent({ keepAlive: true });
  constructor(socketPath: string) {
    this.socketPath = socketPath;
  }
  call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          socketPath: this.socketPath,
          agent: this.agent,
          method,
          path,
          headers: payload
            ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) }
            : {},
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            try {
              resolve(parseJsonAnswer(res.statusCode ?? 500, Buffer.concat(chunks).toString("utf8")) as T);
            } catch (e) {
              reject(e);
            }
          });
        },
      );
      req.on("error", (e: NodeJS.ErrnoException) =>
        reject(
          new QhxError(
            "QHX_UNAVAILABLE",
            `cannot reach the server's admin socket ${this.socketPath}: ${e.code ?? e.message}`,
            {
              hint: "is `qhx server start` running? use --socket PATH, or --data-dir DIR to work offline",
            },
          ),
        ),
      );
      if (payload) req.write(payload);
      req.end();
    });
  }
  async close(): Promise<void> {
    this.agent.destroy();
  }
}

export class LocalClient implements AdminClient {
  private readonly core: ServerCore;
  private constructor(core: ServerCore) {
    this.core = core;
  }
  static async open(dataDir: string): Promise<LocalClient> {
    const [{ parseServerConfig }, { readDataDirInfo, ServerCore }] = await Promise.all([
      import("../server/config.ts"),
      import("../server/core.ts"),
    ]);
    const info = readDataDirInfo(dataDir);
    if (!info) {
      throw new QhxError("QHX_NOT_A_DATA_DIR", `${dataDir} is not a QHx server data directory`, {
        hint: `initialize it with: qhx server init --trust-domain <td> --data-dir ${dataDir}`,
      });
    }
    if (info.settings.key_manager !== "disk") {
      throw new QhxError("QHX_UNSUPPORTED", "offline mode needs a server whose key_manager is disk", {
        hint: "use --socket to reach the running server",
      });
    }
    const cfg = parseServerConfig(
      {
        trust_domain: info.trust_domain,
        data_dir: dataDir,
        ca: {
          key_type: info.settings.ca_key_type,
          ttl: info.settings.ca_ttl_ms / 1000,
          ...(info.settings.ca_upstream ? { upstream: info.settings.ca_upstream } : {}),
        },
        jwt: { key_type: info.settings.jwt_key_type },
        default_x509_svid_ttl: info.settings.default_x509_svid_ttl_ms / 1000,
        default_jwt_svid_ttl: info.settings.default_jwt_svid_ttl_ms / 1000,
      },
      `${dataDir}/qhx-server.json`,
    );
    return new LocalClient(await ServerCore.open(cfg, { clock: systemClock, create: false }));
  }
  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const url = new URL(path, "http://local");
    const { handleAdmin } = await import("../server/admin-api.ts");
    const r = await handleAdmin(this.core, { method, path: url.pathname, query: url.searchParams, body });
    if (r.status >= 400) throw errorFromAnswer(r.status, r.body);
    return r.body as T;
  }
  async close(): Promise<void> {
    await this.core.close();
  }
}

/** How a command names its server: `--socket PATH` or `--data-dir DIR` (else QHX_ADMIN_SOCKET). */
export interface ConnectionOptions {
  socket?: string;
  dataDir?: string;
}

/** Add the connection options shared by every command that needs a server. */
export function withConnection<C extends { option(flags: string, description: string): C }>(cmd: C): C {
  return cmd
    .option("--socket <path>", "a running server's admin socket (or QHX_ADMIN_SOCKET)")
    .option("--data-dir <dir>", "work offline on a server's data directory");
}

/**
 * The admin client the options name. `local` opens the offline client for a data directory (default: the
 * full in-process server, LocalClient); a command that needs less of the server may pass a lighter one.
 */
export async function connectAdmin(
  o: ConnectionOptions,
  local: (dataDir: string) => AdminClient | Promise<AdminClient> = (d) => LocalClient.open(d),
): Promise<AdminClient> {
  if (o.socket && o.dataDir) throw new ValidationError("give --socket or --data-dir, not both");
  if (o.socket) return new SocketClient(path.resolve(o.socket));
  if (o.dataDir) return local(path.resolve(o.dataDir));
  const env = process.env["QHX_ADMIN_SOCKET"];
  if (env) return new SocketClient(env);
  throw new ValidationError(
    "no server given: use --socket PATH (running server) or --data-dir DIR (offline)",
  );
}

/** Run `fn` with the admin client the options name, closing it afterwards. */
export async function withClient<T>(
  o: ConnectionOptions,
  fn: (c: AdminClient) => Promise<T>,
  local?: (dataDir: string) => AdminClient | Promise<AdminClient>,
): Promise<T> {
  const c = await connectAdmin(o, local);
  try {
    return await fn(c);
  } finally {
    await c.close();
  }
}
