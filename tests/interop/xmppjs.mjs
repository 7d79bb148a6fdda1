// Interop scenarios for sasl2-fast against the real xmpp.js client (@xmpp/client 0.14.0).
//
// Driven by tests/interop_xmppjs.rs, which starts the example host in-process and runs
//   node tests/interop/xmppjs.mjs --scenario NAME --port PORT --store TOKEN.json [options]
// with NODE_EXTRA_CA_CERTS pointing at the host's self-signed certificate (issued for
// "localhost"; xmpp.js uses the `domain` as TLS servername on STARTTLS).
//
// Every scenario prints each check it made ("ok - ...") and exits non-zero on the first
// deviation ("FAIL - ..."). XMPP_INTEROP_DEBUG=1 prints every XML element sent (C:) and
// received (S:), tokens included.
//
// Scenarios (each is one process = one "app start", token persisted in --store):
//   password  SASL2 login with --mech (SCRAM-SHA-1 default, or PLAIN), token requested
//             and saved to --store.
//   fast      no password at all: HT-SHA-256-NONE with the stored token, server proof
//             verified, Bind 2 online with a full JID, ping to the server.
//   rotate    FAST login with a token older than token_min_ttl: the success carries a
//             rotated token (saved); a new client logs in with the rotated token; then a
//             fresh client given the previous raw token gets not-authorized and falls back
//             to the password on the same stream, receiving a new token.
//   tampered  stored token altered: not-authorized, password fallback on the same stream,
//             a new (different) token saved.
//   expired   stored token past its server-side expiry: credentials-expired, password
//             fallback on the same stream, a new token saved. xmpp.js itself skips tokens
//             whose `expiry` has passed on its own clock, so the stored expiry is pushed
//             into the future first (as a client with a skewed clock would have it) to make
//             xmpp.js actually present the expired token to the server.

import { readFileSync, writeFileSync } from "node:fs";
import { client, xml } from "@xmpp/client";

const NS_SASL2 = "urn:xmpp:sasl:2";
const NS_FAST = "urn:xmpp:fast:0";
const NS_BIND2 = "urn:xmpp:bind:0";
const NS_BIND1 = "urn:ietf:params:xml:ns:xmpp-bind";
const FAST_MECH = "HT-SHA-256-NONE";
// Stable user-agent id: tokens are bound to it, so it must survive "restarts" (processes).
// xmpp.js's default is a fresh crypto.randomUUID() per client object.
const UA_ID = "d5b2a5c4-3f1e-4c8a-9b7d-0e6f1a2b3c4d";

const args = parseArgs(process.argv.slice(2));
const scenario = args.scenario;
const port = Number(args.port);
const store = args.store;
const username = args.username ?? "alice";
const password = args.password ?? "alicepass";
const domain = args.domain ?? "localhost";
const passwordMech = args.mech ?? "SCRAM-SHA-1";
const debug = !!process.env.XMPP_INTEROP_DEBUG;
const TIMEOUT_MS = Number(args.timeout ?? 20000);

let failed = false;
function ok(msg) {
  console.log(`ok - [${scenario}] ${msg}`);
}
function fail(msg) {
  console.log(`FAIL - [${scenario}] ${msg}`);
  failed = true;
  throw new Error(msg);
}
function check(cond, msg) {
  if (cond) ok(msg);
  else fail(msg);
}

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${a}`);
    out[a.slice(2)] = argv[++i];
  }
  return out;
}

function loadToken() {
  return JSON.parse(readFileSync(store, "utf8"));
}
function persistToken(token) {
  writeFileSync(store, JSON.stringify(token, null, 2) + "\n");
}

// One client object = one app start. `mode` is "password" (credentials include the
// password; FAST is still tried first if `token` is given) or "fast-only" (no password:
// taking the password path is a failure).
function makeClient(label, { mode, token, mech = passwordMech }) {
  const log = {
    label,
    sent: [], // elements we sent
    received: [], // elements received
    saved: [], // tokens passed to saveToken
    deleted: 0,
    fetched: 0,
    credentialsCalls: 0,
    passwordPathTaken: false,
  };
  let current = token ?? null;

  const userAgent = xml(
    "user-agent",
    { id: UA_ID },
    xml("software", {}, "xmpp.js 0.14.0 (sasl2-fast interop)"),
    xml("device", {}, "interop-test"),
  );
  const xmpp = client({
    service: `xmpp://127.0.0.1:${port}`,
    domain,
    // Each step's wait (stream open, STARTTLS, ...); xmpp.js's default is 2 s, which a loaded
    // shared machine exceeded ("failed to come online: TimeoutError" 3 s into a run).
    timeout: TIMEOUT_MS,
    // `username` makes xmpp.js set entity.jid, so it sends the stream `from` on TLS.
    username,
    // Used by xmpp.js's default credentials handler only; with a credentials callback the
    // callback must hand the element to authenticate() itself (below).
    userAgent,
    // Credentials callback: (authenticate, mechanisms, fast, entity). We choose the password
    // mechanism ourselves, which restricts it (e.g. to PLAIN) regardless of xmpp.js's order.
    credentials: async (authenticate, mechanisms, fast) => {
      log.credentialsCalls++;
      log.offered = mechanisms;
      log.fastOffered = fast ? [...fast.mechanisms] : [];
      const tok = fast ? await fast.fetch() : null;
      if (mode === "fast-only") {
        await authenticate({ username, token: tok }, mech, userAgent);
      } else {
        if (!mechanisms.includes(mech)) {
          throw new Error(`server did not offer ${mech}: ${mechanisms}`);
        }
        await authenticate({ username, password, token: tok }, mech, userAgent);
      }
    },
  });
  xmpp.reconnect.stop();
  log.connects = 0;
  xmpp.on("connect", () => log.connects++);

  xmpp.fast.fetchToken = async () => {
    log.fetched++;
    return current;
  };
  xmpp.fast.saveToken = async (t) => {
    log.saved.push(t);
    current = t;
  };
  xmpp.fast.deleteToken = async () => {
    log.deleted++;
    current = null;
  };

  // Any use of the password SASL factory means the password path was taken.
  const origCreate = xmpp.saslFactory.create.bind(xmpp.saslFactory);
  xmpp.saslFactory.create = (mechs) => {
    log.passwordPathTaken = true;
    if (mode === "fast-only") {
      throw new Error(`password path taken (mechanism ${mechs}) in a no-password client`);
    }
    return origCreate(mechs);
  };

  xmpp.on("send", (el) => {
    log.sent.push(el);
  });
  if (debug) {
    // Raw outgoing data (stream headers included); @xmpp/connection 0.14 has no
    // input/output events, so wrap write() and log the parsed incoming side below.
    const write = xmpp.write.bind(xmpp);
    xmpp.write = (str) => {
      console.log(`[${label}] C: ${str}`);
      return write(str);
    };
    xmpp.on("status", (status, el) => {
      if (status === "open" && el) {
        const open = el.toString().replace(/\/>$/, ">");
        console.log(`[${label}] S: ${open}`);
      } else if (status !== "open") {
        console.log(`[${label}] -- ${status}`);
      }
    });
  }
  // Prepended so the log shows an element before whatever xmpp.js sends in reaction to it.
  xmpp.prependListener("element", (el) => {
    log.received.push(el);
    if (debug) console.log(`[${label}] S: ${el.toString()}`);
  });
  xmpp.on("error", (err) => {
    log.error = err;
    if (debug) console.log(`[${label}] error: ${err?.stack ?? err}`);
  });

  log.current = () => current;
  return { xmpp, log };
}

async function run(label, opts) {
  const c = makeClient(label, opts);
  const { xmpp, log } = c;
  let timer;
  try {
    const address = await Promise.race([
      xmpp.start(),
      new Promise((_, rej) => {
        timer = setTimeout(() => rej(new Error(`timeout after ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
      }),
    ]);
    log.address = address?.toString();
  } catch (err) {
    log.startError = err;
  } finally {
    clearTimeout(timer);
  }
  return c;
}

async function stop({ xmpp }) {
  try {
    await xmpp.stop();
  } catch {
    // already closed
  }
}

// Inspect what the client sent / received.
function authenticates(log) {
  return log.sent.filter((e) => e.is("authenticate", NS_SASL2));
}
function failures(log) {
  return log.received.filter((e) => e.is("failure", NS_SASL2));
}
function successes(log) {
  return log.received.filter((e) => e.is("success", NS_SASL2));
}
function failureCondition(el) {
  const c = el.getChildElements().find((x) => x.name !== "text" && x.name !== "additional-data");
  return c?.name;
}

function checkOnline(log) {
  if (log.startError) fail(`client ${log.label} failed to come online: ${log.startError?.stack ?? log.startError}`);
  check(/^[^@]+@[^/]+\/.+$/.test(log.address ?? ""), `${log.label}: online with full JID ${log.address}`);
  check(log.address.startsWith(`${username}@${domain}/`), `${log.label}: JID is ${username}@${domain}/…`);
  const auth = authenticates(log).at(-1);
  check(!!auth?.getChild("bind", NS_BIND2), `${log.label}: Bind 2 <bind/> sent inline in <authenticate>`);
  const bound = successes(log).at(-1)?.getChild("bound", NS_BIND2);
  check(!!bound, `${log.label}: <bound/> received in <success>`);
  const legacyBind = log.sent.some((e) => e.is("iq") && e.getChild("bind", NS_BIND1));
  check(!legacyBind, `${log.label}: no RFC 6120 resource-binding iq was needed`);
  const ua = auth.getChild("user-agent");
  check(ua?.attrs.id === UA_ID, `${log.label}: stable <user-agent id='${UA_ID}'> sent`);
}

async function checkPing(c) {
  const res = await c.xmpp.iqCaller.request(
    xml("iq", { type: "get", to: domain }, xml("ping", { xmlns: "urn:xmpp:ping" })),
    10000,
  );
  check(res.attrs.type === "result", `${c.log.label}: ping to ${domain} answered with type=result`);
}

function checkFastLogin(log, { expectRotation }) {
  const auths = authenticates(log);
  check(auths.length === 1, `${log.label}: exactly one <authenticate> on the stream`);
  check(auths[0].attrs.mechanism === FAST_MECH, `${log.label}: mechanism ${auths[0].attrs.mechanism}`);
  check(!!auths[0].getChild("fast", NS_FAST), `${log.label}: <fast xmlns='${NS_FAST}'/> sent`);
  check(!log.passwordPathTaken, `${log.label}: password path not taken`);
  check(failures(log).length === 0, `${log.label}: no SASL2 <failure>`);
  const succ = successes(log)[0];
  const ad = succ?.getChildText("additional-data");
  check(!!ad, `${log.label}: server proof present in <additional-data> (xmpp.js verified it, or login would have failed)`);
  const tok = succ.getChild("token", NS_FAST);
  if (expectRotation) {
    check(!!tok, `${log.label}: rotated <token/> in <success>`);
  } else {
    check(!tok, `${log.label}: no new token in <success> (not due for rotation)`);
  }
}

function checkPasswordLogin(log, mech) {
  const auths = authenticates(log);
  const last = auths.at(-1);
  check(last?.attrs.mechanism === mech, `${log.label}: password login with ${mech}`);
  const req = last.getChild("request-token", NS_FAST);
  check(req?.attrs.mechanism === FAST_MECH, `${log.label}: <request-token mechanism='${FAST_MECH}'/> sent`);
  const tok = successes(log).at(-1)?.getChild("token", NS_FAST);
  check(!!tok?.attrs.token && !!tok?.attrs.expiry, `${log.label}: <token/> with expiry received in <success>`);
  check(log.saved.length === 1 && log.saved[0].token === tok.attrs.token, `${log.label}: saveToken called with it`);
}

// A fallback on the same stream: FAST <authenticate>, <failure> with `condition`, then a
// password <authenticate> with <request-token>, success, new token saved.
function checkFallback(log, condition, oldToken) {
  const auths = authenticates(log);
  check(auths.length === 2, `${log.label}: two <authenticate> (FAST then password)`);
  check(auths[0].attrs.mechanism === FAST_MECH, `${log.label}: first attempt ${FAST_MECH}`);
  const fl = failures(log);
  check(fl.length === 1, `${log.label}: one SASL2 <failure>`);
  check(failureCondition(fl[0]) === condition, `${log.label}: failure condition is ${failureCondition(fl[0])} (expected ${condition})`);
  check(log.deleted >= 1, `${log.label}: xmpp.js deleted the rejected token (deleteToken called)`);
  check(log.passwordPathTaken, `${log.label}: fell back to password`);
  check(log.connects === 1, `${log.label}: one TCP connection (fallback on the same stream, no reconnect)`);
  checkPasswordLogin(log, passwordMech);
  check(log.saved[0].token !== oldToken, `${log.label}: new token differs from the rejected one`);
}

async function main() {
  if (!scenario || !port || !store) {
    throw new Error("usage: xmppjs.mjs --scenario NAME --port PORT --store FILE [--mech M]");
  }
  switch (scenario) {
    case "password": {
      const c = await run(`password-${passwordMech}`, { mode: "password" });
      checkOnline(c.log);
      check(c.log.fetched >= 1, `${c.log.label}: fetchToken consulted (nothing stored yet)`);
      check(c.log.fastOffered.includes(FAST_MECH), `${c.log.label}: server offers FAST ${c.log.fastOffered}`);
      checkPasswordLogin(c.log, passwordMech);
      await checkPing(c);
      persistToken(c.log.saved[0]);
      ok(`token persisted to ${store} (expiry ${c.log.saved[0].expiry})`);
      await stop(c);
      break;
    }
    case "fast": {
      const token = loadToken();
      const c = await run("fast", { mode: "fast-only", token });
      checkOnline(c.log);
      checkFastLogin(c.log, { expectRotation: false });
      await checkPing(c);
      await stop(c);
      break;
    }
    case "rotate": {
      const old = loadToken();
      const c1 = await run("rotate-1", { mode: "fast-only", token: old });
      checkOnline(c1.log);
      checkFastLogin(c1.log, { expectRotation: true });
      check(c1.log.saved.length === 1, `${c1.log.label}: saveToken called once`);
      const rotated = c1.log.saved[0];
      check(rotated.token !== old.token, `${c1.log.label}: rotated token differs from the previous one`);
      check(rotated.mechanism === FAST_MECH, `${c1.log.label}: rotated token bound to ${rotated.mechanism}`);
      persistToken(rotated);
      ok(`rotated token persisted to ${store}`);
      await stop(c1);

      const c2 = await run("rotate-2", { mode: "fast-only", token: loadToken() });
      checkOnline(c2.log);
      const a2 = authenticates(c2.log);
      check(a2.length === 1 && a2[0].attrs.mechanism === FAST_MECH, `${c2.log.label}: logged in with the rotated token via FAST`);
      check(!c2.log.passwordPathTaken && failures(c2.log).length === 0, `${c2.log.label}: no failure, no password`);
      await checkPing(c2);
      // If this login was itself late enough to rotate again, keep the newest token.
      if (c2.log.saved.length) persistToken(c2.log.saved.at(-1));
      await stop(c2);

      // The previous token has been superseded by the use of the rotated one.
      const c3 = await run("rotate-old", { mode: "password", token: old });
      checkOnline(c3.log);
      checkFallback(c3.log, "not-authorized", old.token);
      persistToken(c3.log.saved[0]);
      await stop(c3);
      break;
    }
    case "tampered": {
      const good = loadToken();
      const chars = [...good.token];
      const i = Math.floor(chars.length / 2);
      chars[i] = chars[i] === "A" ? "B" : "A";
      const bad = { ...good, token: chars.join("") };
      check(bad.token !== good.token, `token altered at position ${i}`);
      const c = await run("tampered", { mode: "password", token: bad });
      checkOnline(c.log);
      checkFallback(c.log, "not-authorized", bad.token);
      check(c.log.saved[0].token !== good.token, `${c.log.label}: new token differs from the original`);
      persistToken(c.log.saved[0]);
      await stop(c);
      break;
    }
    case "expired": {
      const tok = loadToken();
      check(new Date(tok.expiry) <= new Date(), `stored token expiry ${tok.expiry} has passed`);
      // See header: make xmpp.js present it anyway.
      const skewed = { ...tok, expiry: new Date(Date.now() + 3600_000).toISOString() };
      const c = await run("expired", { mode: "password", token: skewed });
      checkOnline(c.log);
      checkFallback(c.log, "credentials-expired", tok.token);
      persistToken(c.log.saved[0]);
      await stop(c);
      break;
    }
    default:
      throw new Error(`unknown scenario ${scenario}`);
  }
}

try {
  await main();
  console.log(`PASS - [${scenario}]`);
  process.exit(0);
} catch (err) {
  if (!failed) console.log(`FAIL - [${scenario}] ${err?.stack ?? err}`);
  process.exit(1);
}
