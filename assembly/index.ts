// Entry point of build/qhx-core.wasm (see asconfig.json). Keep this a list of re-exports: each kernel
// lives in its own file and is exported from here.

export { checkSpiffeId, spiffeInputCap, spiffeInputPtr, spiffeTrustDomainEnd } from "./spiffeid";
