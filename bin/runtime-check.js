// Plain JavaScript on purpose: this file must run on any Node, however old, to say what is wrong.
export const REQUIRED_NODE_MAJOR = 24;
export const REQUIRED_OPENSSL = [3, 5];

function parseVersion(v) {
  const m = /^v?(\d+)\.(\d+)(?:\.(\d+))?/.exec(String(v || ""));
  return m ? [Number(m[1]), Number(m[2]), Number(m[3] || 0)] : null;
}

/**
 * Returns null when the runtime is good enough, otherwise one line saying what is wrong and how to fix it.
 * `versions` is process.versions (injectable for tests).
 */
export function checkRuntime(versions) {
  const node = parseVersion(versions?.node);
  const fix =
    "run qhx through the repository's pinned Node 24 (`npm ci`, then `npx qhx …` or `npm run …`), or install Node.js 24 LTS";
  if (!node || node[0] < REQUIRED_NODE_MAJOR) {
    return `qhx needs Node.js >= ${REQUIRED_NODE_MAJOR} (this is ${versions?.node}); ${fix}`;
  }
  const ossl = parseVersion(versions.openssl);
  if (
    !ossl ||
    ossl[0] < REQUIRED_OPENSSL[0] ||
    (ossl[0] === REQUIRED_OPENSSL[0] && ossl[1] < REQUIRED_OPENSSL[1])
  ) {
    return `qhx needs OpenSSL >= ${REQUIRED_OPENSSL.join(".")} for ML-DSA and ML-KEM (this Node links ${versions.openssl || "no OpenSSL"}); ${fix}`;
  }
  return null;
}
