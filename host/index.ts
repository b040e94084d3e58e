/** The `qhx` package's public API: the identity core and the server building blocks. */
export * from "./core/alg.ts";
export * from "./core/bundle.ts";
export type * from "./core/bundle-types.ts";
export * from "./core/clock.ts";
export * from "./core/entry.ts";
export * from "./core/errors.ts";
export * from "./core/jwtsvid.ts";
export * from "./core/pem.ts";
export * from "./core/spiffeid.ts";
export * from "./core/x509.ts";
export * from "./core/x509-verify.ts";
export { CaManager } from "./server/ca.ts";
export { parseServerConfig } from "./server/config.ts";
export { ServerCore } from "./server/core.ts";
export { openDatastore } from "./server/datastore/index.ts";
export type * from "./server/datastore/types.ts";
export { openKeyManager } from "./server/keymanager/index.ts";
export { startServer } from "./server/server.ts";
