import pino, { type Logger } from "pino";

export type { Logger };

/** JSON logs on stdout (or the given destination). Secrets and private keys are never passed to it. */
export function createLogger(level: string, name: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      name,
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: ["token", "*.token", "privateKey", "*.privateKey", "key", "*.key"],
        censor: "[redacted]",
      },
    },
    destination ?? pino.destination({ fd: 1, sync: true }),
  );
}

export const silentLogger: Logger = pino({ level: "silent" });
