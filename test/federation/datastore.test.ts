/**
 * The datastore side of federation: relationships beside the bundles table, on a real SQLite file and a
 * real PostgreSQL database (skipped, with the reason, where PostgreSQL is not installed).
 */
import { describe, expect, it } from "vitest";
import type { FederationRelationship } from "../../host/server/datastore/types.ts";
import { DATASTORE_KINDS, unavailable, useDatastoreHarness } from "../datastore/harness.ts";

const rel = (td: string): FederationRelationship => ({
  trustDomain: td,
  bundleEndpointUrl: `https://${td}/`,
  profile: "https_spiffe",
  endpointSpiffeId: `spiffe://${td}/qhx/server`,
  webTrustRoots: null,
  createdAt: 100,
  updatedAt: 100,
});

for (const kind of DATASTORE_KINDS) {
  const why = unavailable(kind);
  describe.skipIf(why !== undefined)(
    `federation relationships in the datastore: ${kind}${why ? ` (skipped: ${why})` : ""}`,
    () => {
      const h = useDatastoreHarness(kind);
      it("creates with the initial bundle, lists, updates, and deletes with the bundle in one transaction", async () => {
        let ds = await h.open();
        await ds.createFederationRelationship(rel("b.test"), {
          trustDomain: "b.test",
          document: '{"keys":[]}',
          sequence: 3,
          updatedAt: 100,
        });
        await ds.createFederationRelationship(rel("c.test"));
        await expect(ds.createFederationRelationship(rel("b.test"))).rejects.toMatchObject({
          code: "QHX_ALREADY_EXISTS",
        });
        await expect(
          ds.createFederationRelationship({ ...rel("d.test"), profile: "http" as never }),
        ).rejects.toMatchObject({
          code: "QHX_INVALID_ARGUMENT",
        });
        expect((await ds.getBundle("b.test"))?.sequence).toBe(3);
        expect(await ds.getBundle("c.test")).toBeUndefined();
        expect((await ds.listFederationRelationships()).map((r) => r.trustDomain)).toEqual([
          "b.test",
          "c.test",
        ]);

        const u = await ds.updateFederationRelationship(
          "b.test",
          { profile: "https_web", endpointSpiffeId: null, webTrustRoots: "PEM" },
          200,
        );
        expect(u).toMatchObject({
          profile: "https_web",
          endpointSpiffeId: null,
          webTrustRoots: "PEM",
          updatedAt: 200,
          createdAt: 100,
        });
        await expect(ds.updateFederationRelationship("x.test", {}, 1)).rejects.toMatchObject({
          code: "QHX_NOT_FOUND",
        });

        // durable across a reopen
        await ds.close();
        ds = await h.open();
        expect(await ds.getFederationRelationship("b.test")).toEqual(u);

        expect(await ds.deleteFederationRelationship("b.test")).toBe(true);
        expect(await ds.getBundle("b.test")).toBeUndefined();
        expect(await ds.deleteFederationRelationship("b.test")).toBe(false);
        // a bundle with no relationship (e.g. the own one) is untouched by deleting another relationship
        await ds.putBundle({ trustDomain: "own.test", document: "{}", sequence: 1, updatedAt: 1 });
        expect(await ds.deleteFederationRelationship("c.test")).toBe(true);
        expect(await ds.getBundle("own.test")).toBeDefined();
        await ds.close();
      });
    },
  );
}
