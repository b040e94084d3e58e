import { AsnConvert, OctetString } from "@peculiar/asn1-schema";
import { Extension, GeneralName, SubjectAlternativeName, SubjectKeyIdentifier, Validity, Time, AlgorithmIdentifier } from "@peculiar/asn1-x509";
import { PreEncoded } from "../host/core/x509.ts";
function t(name: string, fn: () => void, n = 20000) { for (let i = 0; i < 2000; i++) fn(); const s = performance.now(); for (let i = 0; i < n; i++) fn(); console.log(name.padEnd(30), ((performance.now() - s) * 1000 / n).toFixed(2), "µs"); }
const d = new Date();
t("validity", () => AsnConvert.serialize(new Validity({ notBefore: d, notAfter: d })));
t("time", () => AsnConvert.serialize(new Time(d)));
t("san", () => AsnConvert.serialize(new SubjectAlternativeName([new GeneralName({ uniformResourceIdentifier: "spiffe://example.org/w" })])));
const ski = new Uint8Array(20).buffer;
t("ski", () => AsnConvert.serialize(new SubjectKeyIdentifier(ski)));
t("ext", () => AsnConvert.serialize(new Extension({ extnID: "2.5.29.14", extnValue: new OctetString(ski) })));
t("algid", () => AsnConvert.serialize(new AlgorithmIdentifier({ algorithm: "1.2.840.10045.4.3.2" })));
const p = new PreEncoded(new Uint8Array(100));
t("ext-raw", () => AsnConvert.serialize(new Extension({ extnID: "2.5.29.14", extnValue: p as any })));
