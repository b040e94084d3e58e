// Static buffers shared by the kernels and the host. Nothing is allocated at run time.
import { CTX_SIZE } from "./sponge";

export const IO_CAP: usize = 65536;
/** Chunk buffer for streamed input (messages, SHA-3 data) and output. */
export const IO: usize = memory.data(<i32>IO_CAP, 16);
/** Public key / encapsulation key. */
export const PK: usize = memory.data(4096, 16);
/** Secret key / decapsulation key. */
export const SK: usize = memory.data(8192, 16);
/** Signature / ciphertext. */
export const SIG: usize = memory.data(8192, 16);
/** Seed input (ML-DSA xi, or ML-KEM d || z). */
export const SEED: usize = memory.data(64, 16);
/** Randomness input (ML-DSA rnd, ML-KEM m). */
export const RND: usize = memory.data(32, 16);
/** Shared secret output. */
export const SS: usize = memory.data(32, 16);

/** Sponge contexts: general work, the streamed message hash (mu), the host's SHA-3. */
export const CTX: usize = memory.data(<i32>CTX_SIZE, 16);
export const CTX_MU: usize = memory.data(<i32>CTX_SIZE, 16);
export const CTX_HOST: usize = memory.data(<i32>CTX_SIZE, 16);
export const CTX_B: usize = memory.data(<i32>CTX_SIZE, 16);

/** Scratch bytes (hash inputs and outputs). */
export const SCRATCH: usize = memory.data(2048, 16);
