/**
 * Every QHx error carries a stable `code` (e.g. `QHX_SVID_EXPIRED`) that callers, logs and the CLI can
 * rely on, and an optional `hint` telling an operator what to do about it.
 */
export class QhxError extends Error {
  readonly code: string;
  readonly hint: string | undefined;

  constructor(code: string, message: string, options?: { hint?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "QhxError";
    this.code = code;
    this.hint = options?.hint;
  }
}

/** A SPIFFE ID failed validation. `reason` is one of the stable SPIFFE_ID_* codes. */
export class SpiffeIdError extends QhxError {
  readonly reason: string;
  constructor(reason: string, message: string) {
    super(reason, message);
    this.name = "SpiffeIdError";
    this.reason = reason;
  }
}

/** Input (config, entry, request) that does not satisfy its schema. */
export class ValidationError extends QhxError {
  readonly field: string | undefined;
  constructor(message: string, field?: string, code = "QHX_INVALID_ARGUMENT") {
    super(code, field ? `${field}: ${message}` : message);
    this.name = "ValidationError";
    this.field = field;
  }
}

export class NotFoundError extends QhxError {
  constructor(what: string, id: string) {
    super("QHX_NOT_FOUND", `${what} not found: ${id}`);
    this.name = "NotFoundError";
  }
}

/** Certificate, chain or token verification failed; `code` names the precise rule. */
export class VerificationError extends QhxError {
  constructor(code: string, message: string) {
    super(code, message);
    this.name = "VerificationError";
  }
}

export function isQhxError(e: unknown): e is QhxError {
  return e instanceof QhxError;
}

/** One line for an operator: cause, then hint. Never includes secrets (callers never put them in messages). */
export function formatError(e: unknown): string {
  if (e instanceof QhxError) return `${e.code}: ${e.message}${e.hint ? ` (hint: ${e.hint})` : ""}`;
  if (e instanceof Error) return e.message;
  return String(e);
}

/** The QhxError carried by a QHx JSON error answer `{ error: { code, message, hint } }` of HTTP status `status`. */
export function errorFromAnswer(status: number, body: unknown): QhxError {
  const err = (body as { error?: { code?: string; message?: string; hint?: string } } | null)?.error;
  return new QhxError(err?.code ?? `HTTP_${status}`, err?.message ?? `server answered ${status}`, {
    ...(err?.hint ? { hint: err.hint } : {}),
  });
}

/** Parse a QHx JSON answer: the body on success, else throws the answer's error (or QHX_BAD_RESPONSE). */
export function parseJsonAnswer(status: number, text: string): unknown {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new QhxError("QHX_BAD_RESPONSE", `server answered ${status} with non-JSON`);
  }
  if (status >= 400) throw errorFromAnswer(status, parsed);
  return parsed;
}
