/**
 * A SPIFFE client that fetches once and cancels, thousands of times on one connection, must not be cut
 * off by HTTP/2 rapid-reset protection (nghttp2 allows 1000 resets, then 33/s, by default).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { expect, it } from "vitest";
import { GrpcServer } from "../../host/agent/grpc/server.ts";
import { protoType, workloadProtoJson } from "../../host/agent/workload-api/proto.ts";

it("survives 2,500 fetch-and-cancel calls on one connection", async () => {
  const sock = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "qhx-reset-")), "s.sock");
  const s = new GrpcServer({ peerOf: () => ({ pid: 1, uid: 0, gid: 0 }) });
  s.addService("SpiffeWorkloadAPI", {
    FetchX509Bundles: {
      type: "server_stream",
      requestType: protoType("X509BundlesRequest"),
      responseType: protoType("X509BundlesResponse"),
      handler: async (_r, call) => {
        await call.send({ bundles: {} });
        await new Promise((r) => call.signal.addEventListener("abort", r));
      },
    },
  });
  await s.listen(sock);
  const def = protoLoader.fromJSON(workloadProtoJson() as Parameters<typeof protoLoader.fromJSON>[0], {
    keepCase: true,
  });
  const W = grpc.loadPackageDefinition(def).SpiffeWorkloadAPI as grpc.ServiceClientConstructor;
  const c = new W(`unix:${sock}`, grpc.credentials.createInsecure()) as unknown as Record<
    string,
    (r: object, m: grpc.Metadata) => grpc.ClientReadableStream<unknown>
  > &
    grpc.Client;
  let ok = 0;
  for (let i = 0; i < 2500; i++) {
    await new Promise<void>((resolve, reject) => {
      const call = c.FetchX509Bundles!({}, new grpc.Metadata());
      call.once("data", () => {
        call.cancel();
        ok++;
        resolve();
      });
      call.once("error", (e: grpc.ServiceError) =>
        e.code === grpc.status.CANCELLED ? undefined : reject(e),
      );
    });
  }
  expect(ok).toBe(2500);
  c.close();
  await s.close();
});
