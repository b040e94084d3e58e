import { describe, expect, it } from "vitest";
import {
  checkDnsName,
  entryInputToJson,
  entryPatchToJson,
  entryToJson,
  formatSelector,
  isReservedPath,
  MAX_SVID_TTL_SECONDS,
  parseEntryJson,
  parseEntryPatchJson,
  parseSelector,
  validateEntryInput,
  validateEntryPatch,
} from "../host/core/entry.ts";
import { ValidationError } from "../host/core/errors.ts";
import type { RegistrationEntry } from "../host/server/datastore/types.ts";

const TD = { trustDomain: "example.org" };
const base = {
  spiffeId: "spiffe://example.org/web",
  parentId: "spiffe://example.org/qhx/agent/join_token/abc",
  selectors: [{ type: "unix", value: "uid:1000" }],
};
const baseJson = {
  spiffe_id: "spiffe://example.org/web",
  parent_id: "spiffe://example.org/qhx/agent/join_token/abc",
  selectors: ["unix:uid:1000"],
};

function invalid(fn: () => unknown): ValidationError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ValidationError);
    expect((e as ValidationError).code).toBe("QHX_INVALID_ARGUMENT");
    return e as ValidationError;
  }
  throw new Error("expected a ValidationError");
}

/** Assert the exact message of the ValidationError raised by validateEntryInput({...base, ...extra}). */
function rejectsInput(extra: Record<string, unknown>, message: string, field?: string): void {
  const e = invalid(() => validateEntryInput({ ...base, ...extra }, TD));
  expect(e.message).toBe(message);
  if (field !== undefined) expect(e.field).toBe(field);
}

function rejectsJson(extra: Record<string, unknown>, message: string): void {
  expect(invalid(() => parseEntryJson({ ...baseJson, ...extra }, TD)).message).toBe(message);
}

describe("selectors", () => {
  it("parses type:value with colons in the value", () => {
    expect(parseSelector("unix:uid:1000")).toEqual({ type: "unix", value: "uid:1000" });
    expect(parseSelector("k8s_psat-2:ns:default")).toEqual({ type: "k8s_psat-2", value: "ns:default" });
    expect(parseSelector("tpm:pcr:7:ab12")).toEqual({ type: "tpm", value: "pcr:7:ab12" });
    expect(parseSelector("x:y")).toEqual({ type: "x", value: "y" });
  });

  it("formats back to the same text", () => {
    for (const s of ["unix:uid:1000", "tpm:pcr:7:ab12", "a:b"])
      expect(formatSelector(parseSelector(s))).toBe(s);
  });

  it("rejects malformed selectors with precise messages", () => {
    expect(invalid(() => parseSelector("unix")).message).toBe('selector: must be "type:value" (got "unix")');
    expect(invalid(() => parseSelector(":uid")).message).toBe(
      'selector: selector type must be lowercase letters, digits, "_" or "-" (got "" in ":uid")',
    );
    expect(invalid(() => parseSelector("Unix:uid:1")).message).toBe(
      'selector: selector type must be lowercase letters, digits, "_" or "-" (got "Unix" in "Unix:uid:1")',
    );
    expect(invalid(() => parseSelector("un ix:uid")).message).toContain('(got "un ix"');
    expect(invalid(() => parseSelector("unix:")).message).toBe(
      'selector: selector value must not be empty ("unix:")',
    );
    expect(invalid(() => parseSelector(7 as unknown as string)).message).toBe(
      "selector: must be a string (got number)",
    );
    expect(invalid(() => parseSelector("unix", "selectors[3]")).field).toBe("selectors[3]");
  });
});

describe("validateEntryInput", () => {
  it("accepts a minimal entry and fills defaults", () => {
    expect(validateEntryInput(base, TD)).toEqual({
      ...base,
      namespace: "default",
      labels: {},
      x509SvidTtl: 0,
      jwtSvidTtl: 0,
      dnsNames: [],
      federatesWith: [],
      admin: false,
      expiresAt: null,
    });
  });

  it("accepts a full entry and normalizes it", () => {
    const out = validateEntryInput(
      {
        ...base,
        selectors: [{ type: "unix", value: "uid:1000" }, "unix:gid:50"],
        namespace: "payments-eu1",
        labels: { app: "web", "team.example.com/owner": "alice", x: "" },
        x509SvidTtl: 3600,
        jwtSvidTtl: MAX_SVID_TTL_SECONDS,
        dnsNames: ["Web.Example.ORG", "*.internal.example.org", "1a.example"],
        federatesWith: ["partner.com", "spiffe://other.org"],
        admin: true,
        expiresAt: 1_900_000_000,
      },
      TD,
    );
    expect(out.selectors).toEqual([
      { type: "unix", value: "uid:1000" },
      { type: "unix", value: "gid:50" },
    ]);
    expect(out.dnsNames).toEqual(["web.example.org", "*.internal.example.org", "1a.example"]);
    expect(out.federatesWith).toEqual(["partner.com", "other.org"]);
    expect(out.labels).toEqual({ app: "web", "team.example.com/owner": "alice", x: "" });
    expect(out.admin).toBe(true);
    expect(out.expiresAt).toBe(1_900_000_000);
    expect(out.namespace).toBe("payments-eu1");
  });

  it("treats undefined fields as absent", () => {
    expect(validateEntryInput({ ...base, namespace: undefined, expiresAt: undefined }, TD).namespace).toBe(
      "default",
    );
  });

  it("requires an object", () => {
    expect(invalid(() => validateEntryInput(null, TD)).message).toBe("entry: must be an object (got null)");
    expect(invalid(() => validateEntryInput([], TD)).message).toBe("entry: must be an object (got array)");
    expect(invalid(() => validateEntryInput("x", TD)).message).toBe("entry: must be an object (got string)");
  });

  it("requires spiffeId, parentId and selectors", () => {
    for (const f of ["spiffeId", "parentId", "selectors"] as const) {
      const input: Record<string, unknown> = { ...base };
      delete input[f];
      const e = invalid(() => validateEntryInput(input, TD));
      expect(e.message).toBe(`${f}: is required`);
      expect(e.field).toBe(f);
    }
    rejectsInput({ spiffeId: null }, "spiffeId: is required");
  });

  it("rejects unknown fields, server-assigned fields and the other spelling", () => {
    rejectsInput(
      { color: "red" },
      "color: unknown field (allowed: spiffeId, parentId, selectors, namespace, labels, x509SvidTtl, jwtSvidTtl, " +
        "dnsNames, federatesWith, admin, expiresAt)",
      "color",
    );
    rejectsInput({ spiffe_id: "x" }, 'spiffe_id: unknown field; did you mean "spiffeId"?');
    rejectsInput({ id: "x" }, "id: is assigned by the server and cannot be set");
    rejectsInput({ revision: 3 }, "revision: is assigned by the server and cannot be set");
  });

  describe("spiffeId", () => {
    it("must be a valid SPIFFE ID, with the rule named", () => {
      rejectsInput(
        { spiffeId: "spiffe://Bad/x" },
        'spiffeId: trust domain characters are limited to lowercase letters, digits, dots, dashes and underscores ("spiffe://Bad/x")',
      );
      rejectsInput(
        { spiffeId: "http://example.org/x" },
        'spiffeId: scheme is missing or not "spiffe://" (lowercase) ("http://example.org/x")',
      );
      rejectsInput(
        { spiffeId: "spiffe://example.org/a//b" },
        'spiffeId: path must not contain empty segments (//) ("spiffe://example.org/a//b")',
      );
      rejectsInput(
        { spiffeId: "spiffe://example.org/a/" },
        'spiffeId: path must not end with / ("spiffe://example.org/a/")',
      );
      rejectsInput({ spiffeId: "" }, 'spiffeId: SPIFFE ID is empty ("")');
      rejectsInput({ spiffeId: 5 }, "spiffeId: must be a string (got number)");
    });

    it("must be in the server's trust domain", () => {
      rejectsInput(
        { spiffeId: "spiffe://other.org/web" },
        'spiffeId: must be in trust domain "example.org" (got "spiffe://other.org/web")',
      );
    });

    it("must not be the trust domain ID", () => {
      rejectsInput(
        { spiffeId: "spiffe://example.org" },
        'spiffeId: must not be the trust domain ID itself ("spiffe://example.org"); add a path, e.g. "spiffe://example.org/my-service"',
      );
    });

    it("must not be under the reserved /qhx/ prefix", () => {
      for (const id of [
        "spiffe://example.org/qhx/agent/x",
        "spiffe://example.org/qhx",
        "spiffe://example.org/QHX/x",
      ]) {
        rejectsInput(
          { spiffeId: id },
          `spiffeId: path prefix "/qhx/" is reserved for QHx agents and servers ("${id}")`,
        );
      }
      expect(validateEntryInput({ ...base, spiffeId: "spiffe://example.org/qhxx/a" }, TD).spiffeId).toBe(
        "spiffe://example.org/qhxx/a",
      );
      expect(validateEntryInput({ ...base, spiffeId: "spiffe://example.org/a/qhx/b" }, TD).spiffeId).toBe(
        "spiffe://example.org/a/qhx/b",
      );
      expect(isReservedPath("/qhx/server")).toBe(true);
      expect(isReservedPath("/app/qhx")).toBe(false);
    });
  });

  describe("parentId", () => {
    it("must be a valid SPIFFE ID of the trust domain; may be reserved or the trust domain ID", () => {
      rejectsInput(
        { parentId: "spiffe://example.org/a?b" },
        'parentId: SPIFFE ID must not contain a query (?) ("spiffe://example.org/a?b")',
      );
      rejectsInput(
        { parentId: "spiffe://other.org/qhx/agent/x" },
        'parentId: must be in trust domain "example.org" (got "spiffe://other.org/qhx/agent/x")',
      );
      rejectsInput({ parentId: ["x"] }, "parentId: must be a string (got array)");
      expect(validateEntryInput({ ...base, parentId: "spiffe://example.org/qhx/server" }, TD).parentId).toBe(
        "spiffe://example.org/qhx/server",
      );
      expect(validateEntryInput({ ...base, parentId: "spiffe://example.org/node-group" }, TD).parentId).toBe(
        "spiffe://example.org/node-group",
      );
    });
  });

  describe("selectors", () => {
    it("needs at least one, no duplicates, each well-formed", () => {
      rejectsInput({ selectors: [] }, "selectors: at least one selector is required");
      rejectsInput({ selectors: "unix:uid:1" }, "selectors: must be an array (got string)");
      rejectsInput(
        { selectors: [{ type: "unix", value: "uid:1" }, "unix:uid:1"] },
        'selectors[1]: duplicate selector "unix:uid:1"',
        "selectors[1]",
      );
      rejectsInput({ selectors: ["unix:uid:1", "bad"] }, 'selectors[1]: must be "type:value" (got "bad")');
      rejectsInput(
        { selectors: [{ type: "unix", value: "" }] },
        'selectors[0]: selector value must not be empty ("unix:")',
      );
      rejectsInput(
        { selectors: [{ type: "UNIX", value: "x" }] },
        'selectors[0]: selector type must be lowercase letters, digits, "_" or "-" (got "UNIX" in "UNIX:x")',
      );
      rejectsInput(
        { selectors: [{ type: "unix", value: 1 }] },
        "selectors[0]: selector value must be a string (got number)",
      );
      rejectsInput(
        { selectors: [{ type: 1, value: "x" }] },
        "selectors[0]: selector type must be a string (got number)",
      );
      rejectsInput(
        { selectors: [{ type: "unix", value: "x", extra: 1 }] },
        'selectors[0]: unknown selector field "extra"',
      );
      rejectsInput({ selectors: [42] }, 'selectors[0]: must be a "type:value" string (got number)');
    });
  });

  describe("namespace", () => {
    it("accepts DNS-label-like names", () => {
      for (const ns of ["a", "default", "a-b", "x1", "0", "a".repeat(63)]) {
        expect(validateEntryInput({ ...base, namespace: ns }, TD).namespace).toBe(ns);
      }
    });
    it("rejects everything else", () => {
      for (const ns of ["", "-a", "a-", "A", "a_b", "a.b", "a".repeat(64)]) {
        rejectsInput(
          { namespace: ns },
          `namespace: must be 1-63 lowercase letters, digits or "-", starting and ending with a letter or digit (got ${JSON.stringify(ns)})`,
        );
      }
      rejectsInput({ namespace: 1 }, "namespace: must be a string (got number)");
    });
  });

  describe("labels", () => {
    it("accepts up to 64 labels with valid keys and values up to 256 chars", () => {
      const labels = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`k${i}`, "v".repeat(256)]));
      expect(Object.keys(validateEntryInput({ ...base, labels }, TD).labels)).toHaveLength(64);
      expect(validateEntryInput({ ...base, labels: { "a.b_c/d-E9": "" } }, TD).labels).toEqual({
        "a.b_c/d-E9": "",
      });
    });
    it("keeps __proto__ an ordinary label", () => {
      const labels = JSON.parse('{"__proto__": "x"}');
      const out = validateEntryInput({ ...base, labels }, TD).labels;
      expect(Object.keys(out)).toEqual(["__proto__"]);
      expect(Object.getPrototypeOf(out)).toBe(Object.prototype);
    });
    it("rejects bad labels", () => {
      const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"]));
      rejectsInput({ labels: many }, "labels: at most 64 labels are allowed (got 65)");
      rejectsInput(
        { labels: { "a b": "x" } },
        'labels: key must be 1-63 characters of letters, digits, ".", "_", "/" or "-" (got "a b")',
      );
      rejectsInput(
        { labels: { ["k".repeat(64)]: "x" } },
        `labels: key must be 1-63 characters of letters, digits, ".", "_", "/" or "-" (got "${"k".repeat(64)}")`,
      );
      rejectsInput(
        { labels: { "": "x" } },
        'labels: key must be 1-63 characters of letters, digits, ".", "_", "/" or "-" (got "")',
      );
      rejectsInput(
        { labels: { app: "v".repeat(257) } },
        'labels["app"]: must be at most 256 characters (got 257)',
      );
      rejectsInput({ labels: { app: 1 } }, 'labels["app"]: must be a string (got number)');
      rejectsInput({ labels: ["a"] }, "labels: must be an object (got array)");
      rejectsInput({ labels: null }, "labels: must be an object (got null)");
    });
  });

  describe("TTLs", () => {
    it("accepts integers 0..366 days", () => {
      for (const t of [0, 1, 3600, MAX_SVID_TTL_SECONDS]) {
        const out = validateEntryInput({ ...base, x509SvidTtl: t, jwtSvidTtl: t }, TD);
        expect([out.x509SvidTtl, out.jwtSvidTtl]).toEqual([t, t]);
      }
      expect(MAX_SVID_TTL_SECONDS).toBe(31_622_400);
    });
    it("rejects out of range and non-integers", () => {
      const range = (f: string, v: number) =>
        `${f}: must be between 0 and 31622400 seconds (366 days); 0 means the server default (got ${v})`;
      rejectsInput({ x509SvidTtl: -1 }, range("x509SvidTtl", -1));
      rejectsInput({ jwtSvidTtl: MAX_SVID_TTL_SECONDS + 1 }, range("jwtSvidTtl", MAX_SVID_TTL_SECONDS + 1));
      rejectsInput({ x509SvidTtl: 1.5 }, "x509SvidTtl: must be an integer number of seconds (got 1.5)");
      rejectsInput(
        { jwtSvidTtl: "60" },
        'jwtSvidTtl: must be an integer number of seconds (got string "60")',
      );
      rejectsInput({ jwtSvidTtl: Number.NaN }, "jwtSvidTtl: must be an integer number of seconds (got NaN)");
    });
  });

  describe("dnsNames", () => {
    it("accepts RFC 1123 names, lowercased, with a leftmost wildcard", () => {
      expect(checkDnsName("WWW.Example.COM")).toBe("www.example.com");
      expect(checkDnsName("localhost")).toBe("localhost");
      expect(checkDnsName("*.example.com")).toBe("*.example.com");
      expect(checkDnsName("xn--bcher-kva.example")).toBe("xn--bcher-kva.example");
      const long = `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(61)}`;
      expect(long.length).toBe(253);
      expect(checkDnsName(long)).toBe(long);
    });
    it("rejects invalid names with the field and index", () => {
      const f = "dnsNames[0]";
      rejectsInput({ dnsNames: [""] }, `${f}: DNS name must not be empty`);
      const tooLong = `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(62)}`;
      expect(invalid(() => validateEntryInput({ ...base, dnsNames: [tooLong] }, TD)).message).toMatch(
        /^dnsNames\[0\]: DNS name is longer than 253 characters \(254: /,
      );
      rejectsInput(
        { dnsNames: ["a.*.com"] },
        `${f}: wildcard "*" is only allowed as the entire leftmost label ("a.*.com")`,
      );
      rejectsInput(
        { dnsNames: ["*a.com"] },
        `${f}: wildcard "*" is only allowed as the entire leftmost label ("*a.com")`,
      );
      rejectsInput(
        { dnsNames: ["*.*.com"] },
        `${f}: wildcard "*" is only allowed as the entire leftmost label ("*.*.com")`,
      );
      rejectsInput({ dnsNames: ["*"] }, `${f}: a wildcard needs a domain after it ("*")`);
      rejectsInput({ dnsNames: ["a..b"] }, `${f}: DNS name must not contain an empty label ("a..b")`);
      rejectsInput({ dnsNames: ["example.com."] }, `${f}: DNS name must not end with "." ("example.com.")`);
      rejectsInput(
        { dnsNames: [`${"x".repeat(64)}.com`] },
        `${f}: DNS label "${"x".repeat(64)}" is longer than 63 characters ("${"x".repeat(64)}.com")`,
      );
      const charMsg = (label: string, name: string) =>
        `${f}: DNS label "${label}" must be letters, digits and "-", not starting or ending with "-" (use punycode "xn--..." for international names) ("${name}")`;
      rejectsInput({ dnsNames: ["-a.com"] }, charMsg("-a", "-a.com"));
      rejectsInput({ dnsNames: ["a-.com"] }, charMsg("a-", "a-.com"));
      rejectsInput({ dnsNames: ["a_b.com"] }, charMsg("a_b", "a_b.com"));
      rejectsInput({ dnsNames: ["bücher.example"] }, charMsg("bücher", "bücher.example"));
      rejectsInput({ dnsNames: ["a.com", "A.COM"] }, 'dnsNames[1]: duplicate DNS name "a.com"');
      rejectsInput({ dnsNames: [1] }, `${f}: must be a string (got number)`);
      rejectsInput({ dnsNames: "a.com" }, "dnsNames: must be an array (got string)");
    });
  });

  describe("federatesWith", () => {
    it("accepts trust domain names and IDs, normalized to names", () => {
      expect(
        validateEntryInput({ ...base, federatesWith: ["a.com", "spiffe://b.com"] }, TD).federatesWith,
      ).toEqual(["a.com", "b.com"]);
    });
    it("rejects invalid, own and duplicate trust domains", () => {
      rejectsInput(
        { federatesWith: ["Partner.com"] },
        'federatesWith[0]: trust domain characters are limited to lowercase letters, digits, dots, dashes and underscores ("Partner.com")',
      );
      rejectsInput(
        { federatesWith: ["a.com:443"] },
        'federatesWith[0]: trust domain must not contain a port (:) ("a.com:443")',
      );
      rejectsInput(
        { federatesWith: ["spiffe://a.com/x"] },
        'federatesWith[0]: a trust domain name has no path ("spiffe://a.com/x")',
      );
      rejectsInput({ federatesWith: [""] }, 'federatesWith[0]: trust domain is missing ("")');
      rejectsInput(
        { federatesWith: ["a.com", "example.org"] },
        'federatesWith[1]: must not be the server\'s own trust domain "example.org"',
      );
      rejectsInput(
        { federatesWith: ["a.com", "spiffe://a.com"] },
        'federatesWith[1]: duplicate trust domain "a.com"',
      );
      rejectsInput({ federatesWith: [null] }, "federatesWith[0]: must be a string (got null)");
      rejectsInput({ federatesWith: {} }, "federatesWith: must be an array (got object)");
    });
  });

  describe("admin and expiresAt", () => {
    it("admin must be a boolean", () => {
      rejectsInput({ admin: "yes" }, "admin: must be a boolean (got string)");
      rejectsInput({ admin: 1 }, "admin: must be a boolean (got number)");
    });
    it("expiresAt is null or non-negative integer unix seconds", () => {
      expect(validateEntryInput({ ...base, expiresAt: null }, TD).expiresAt).toBeNull();
      expect(validateEntryInput({ ...base, expiresAt: 0 }, TD).expiresAt).toBe(0);
      const msg = (got: string) =>
        `expiresAt: must be null or a non-negative integer unix time in seconds (got ${got})`;
      rejectsInput({ expiresAt: -1 }, msg("-1"));
      rejectsInput({ expiresAt: 1.5 }, msg("1.5"));
      rejectsInput({ expiresAt: "2030-01-01" }, msg('string "2030-01-01"'));
      rejectsInput(
        { expiresAt: 1_900_000_000_000 },
        "expiresAt: must be unix seconds, at most 253402300799 (9999-12-31); 1900000000000 looks like milliseconds",
      );
    });
  });

  it("reports the first failing field in field order", () => {
    rejectsInput(
      { spiffeId: "bad", namespace: "BAD" },
      'spiffeId: scheme is missing or not "spiffe://" (lowercase) ("bad")',
    );
  });
});

describe("validateEntryPatch", () => {
  it("validates only the fields present", () => {
    expect(validateEntryPatch({ namespace: "ns1" }, TD)).toEqual({ namespace: "ns1" });
    expect(validateEntryPatch({ expiresAt: null }, TD)).toEqual({ expiresAt: null });
    expect(validateEntryPatch({ dnsNames: ["A.b"], admin: false, labels: undefined }, TD)).toEqual({
      dnsNames: ["a.b"],
      admin: false,
    });
    expect(validateEntryPatch({ selectors: ["unix:uid:1"] }, TD)).toEqual({
      selectors: [{ type: "unix", value: "uid:1" }],
    });
  });

  it("applies the same rules", () => {
    expect(invalid(() => validateEntryPatch({ spiffeId: "spiffe://example.org/qhx/x" }, TD)).message).toBe(
      'spiffeId: path prefix "/qhx/" is reserved for QHx agents and servers ("spiffe://example.org/qhx/x")',
    );
    expect(invalid(() => validateEntryPatch({ selectors: [] }, TD)).message).toBe(
      "selectors: at least one selector is required",
    );
    expect(invalid(() => validateEntryPatch({ namespace: null }, TD)).message).toBe(
      "namespace: must be a string (got null)",
    );
    expect(invalid(() => validateEntryPatch({ nope: 1 }, TD)).message).toMatch(/^nope: unknown field/);
  });

  it("refuses an empty patch", () => {
    expect(invalid(() => validateEntryPatch({}, TD)).message).toBe(
      "patch: must change at least one field (spiffeId, parentId, selectors, namespace, labels, x509SvidTtl, " +
        "jwtSvidTtl, dnsNames, federatesWith, admin, expiresAt)",
    );
    expect(invalid(() => validateEntryPatch(null, TD)).message).toBe("patch: must be an object (got null)");
  });
});

describe("snake_case JSON", () => {
  const entry: RegistrationEntry = {
    id: "0b7c3f6e-1d2a-4c55-9a8e-2f0d9b1c7e44",
    spiffeId: "spiffe://example.org/web",
    parentId: "spiffe://example.org/qhx/agent/x",
    selectors: [
      { type: "unix", value: "uid:1000" },
      { type: "k8s", value: "ns:prod" },
    ],
    namespace: "prod",
    labels: { app: "web" },
    x509SvidTtl: 3600,
    jwtSvidTtl: 300,
    dnsNames: ["web.example.org"],
    federatesWith: ["partner.com"],
    admin: true,
    expiresAt: 1_900_000_000,
    createdAt: 1_800_000_000,
    updatedAt: 1_800_000_100,
    revision: 3,
  };

  it("entryToJson maps every field", () => {
    expect(entryToJson(entry)).toEqual({
      id: entry.id,
      spiffe_id: "spiffe://example.org/web",
      parent_id: "spiffe://example.org/qhx/agent/x",
      selectors: ["unix:uid:1000", "k8s:ns:prod"],
      namespace: "prod",
      labels: { app: "web" },
      x509_svid_ttl: 3600,
      jwt_svid_ttl: 300,
      dns_names: ["web.example.org"],
      federates_with: ["partner.com"],
      admin: true,
      expires_at: 1_900_000_000,
      created_at: 1_800_000_000,
      updated_at: 1_800_000_100,
      revision: 3,
    });
  });

  it("round-trips input -> JSON -> input", () => {
    const input = validateEntryInput(
      { ...base, labels: { a: "b" }, dnsNames: ["x.y"], federatesWith: ["p.com"], expiresAt: 5 },
      TD,
    );
    expect(parseEntryJson(entryInputToJson(input), TD)).toEqual(input);
    expect(parseEntryJson(JSON.parse(JSON.stringify(entryInputToJson(base))), TD)).toEqual(
      validateEntryInput(base, TD),
    );
  });

  it("parses the JSON form with defaults", () => {
    expect(parseEntryJson(baseJson, TD)).toEqual(validateEntryInput(base, TD));
  });

  it("names fields in snake_case in errors", () => {
    rejectsJson(
      { spiffe_id: "spiffe://Bad/x" },
      'spiffe_id: trust domain characters are limited to lowercase letters, digits, dots, dashes and underscores ("spiffe://Bad/x")',
    );
    rejectsJson(
      { x509_svid_ttl: -5 },
      "x509_svid_ttl: must be between 0 and 31622400 seconds (366 days); 0 means the server default (got -5)",
    );
    rejectsJson({ dns_names: ["a..b"] }, 'dns_names[0]: DNS name must not contain an empty label ("a..b")');
    rejectsJson(
      { federates_with: ["example.org"] },
      'federates_with[0]: must not be the server\'s own trust domain "example.org"',
    );
    rejectsJson({ selectors: ["unix:uid:1", "unix:uid:1"] }, 'selectors[1]: duplicate selector "unix:uid:1"');
    rejectsJson(
      { expires_at: "soon" },
      'expires_at: must be null or a non-negative integer unix time in seconds (got string "soon")',
    );
    rejectsJson({ spiffeId: "x" }, 'spiffeId: unknown field; did you mean "spiffe_id"?');
    rejectsJson({ created_at: 1 }, "created_at: is assigned by the server and cannot be set");
    const missing: Record<string, unknown> = { ...baseJson };
    delete missing.parent_id;
    expect(invalid(() => parseEntryJson(missing, TD)).message).toBe("parent_id: is required");
  });

  it("accepts selectors in either form", () => {
    expect(
      parseEntryJson({ ...baseJson, selectors: [{ type: "unix", value: "uid:1000" }] }, TD).selectors,
    ).toEqual([{ type: "unix", value: "uid:1000" }]);
  });

  it("parses and serializes patches", () => {
    expect(parseEntryPatchJson({ dns_names: ["A.com"], expires_at: null }, TD)).toEqual({
      dnsNames: ["a.com"],
      expiresAt: null,
    });
    expect(invalid(() => parseEntryPatchJson({}, TD)).message).toMatch(
      /^patch: must change at least one field \(spiffe_id, /,
    );
    expect(
      entryPatchToJson({ selectors: [{ type: "a", value: "b:c" }], jwtSvidTtl: 60, expiresAt: null }),
    ).toEqual({
      selectors: ["a:b:c"],
      jwt_svid_ttl: 60,
      expires_at: null,
    });
  });
});
