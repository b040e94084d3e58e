// AssemblyScript's abort hook for this module: trap (the host then fails the stream closed, as Envoy
// does) instead of importing env.abort, so the module imports nothing outside the proxy-wasm ABI.
export function trap(message: usize, fileName: usize, line: u32, column: u32): void {
  unreachable();
}
