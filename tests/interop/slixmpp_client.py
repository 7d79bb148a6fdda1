"""Interop client for sasl2-fast: the real slixmpp (pinned in tests/interop/requirements.txt).

Driven by tests/interop_slixmpp.rs, which starts the example host in-process and runs

    tests/interop/.venv/bin/python tests/interop/slixmpp_client.py \
        --port PORT --ca CERT.pem --jid alice@localhost/RESOURCE [options]

with the password in the environment variable SLIXMPP_INTEROP_PASSWORD (not on the command
line, where `ps` shows it).

slixmpp has no SASL2: it sees the host's RFC 6120 <mechanisms>, authenticates with <auth>
(RFC 6120 §6), restarts the stream and binds a resource (RFC 6120 §7). TLS is STARTTLS (or
direct TLS) with
certificate and host name verification on, trusting only the host's generated certificate
(--ca). The script does not judge: it reports what happened as one JSON object on stdout and the
Rust test asserts on it, so a run in which slixmpp silently did nothing fails there. slixmpp's
own log goes to stderr (--debug for every stanza; passwords stay out of it: slixmpp logs SASL
payloads base64-encoded, and the test accounts are throwaway).

Options:
    --mech NAME        restrict slixmpp to this SASL mechanism (default: slixmpp's own choice)
    --direct-tls       connect to the direct-TLS port (XEP-0368) instead of STARTTLS
    --tls-max 1.2      cap the TLS version (Python's ssl can only bind to tls-unique, i.e. TLS
                       1.2; see "ssl_channel_binding_types" in the report)
    --cam              after login, XEP-0494: list the account's clients ("clients")
    --revoke-software S  with --cam: revoke the listed client whose user-agent software is S
                       with an iq 'set' ("revoke"), then list again ("clients_after")
    --revoke-as-get    first try slixmpp's own XEP_0494.revoke(), which sends an iq 'get'
                       ("revoke_get", "clients_after_get")

Report keys: features (for each <stream:features> received, its children as "{ns}name"),
slixmpp, python, ssl_channel_binding_types (what Python's ssl can bind to), tls_version,
offered (mechanisms of the RFC 6120 feature), failures ([{mechanism, gs2_header, condition,
text}] in order), mechanism (the one that succeeded) and its gs2_header, bound_jid,
ping_rtt_ms, clients / revoke_get / clients_after_get / revoke / clients_after (with --cam),
disconnected_before_session, error.
"""

import argparse
import asyncio
import json
import logging
import os
import ssl
import sys
import time

import slixmpp
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

TIMEOUT_S = 20


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--mech")
    p.add_argument("--tls-max", choices=["1.2", "1.3"])
    p.add_argument("--direct-tls", action="store_true")
    p.add_argument("--cam", action="store_true")
    p.add_argument("--revoke-software")
    p.add_argument("--revoke-as-get", action="store_true")
    p.add_argument("--debug", action="store_true")
    return p.parse_args()


def client_dict(c):
    """One XEP-0494 <client/> as slixmpp's stanza classes parse it."""
    ua = c["user_agent"]
    auth = c["auth"]
    ctype = c["type"]
    return {
        "id": c["id"],
        "type": ctype.value if ctype is not None else None,
        "connected": c["connected"],
        "software": ua["software"] or None,
        "device": ua["device"] or None,
        "auth_password": bool(auth["password"]),
        "auth_fast": bool(auth["fast"]),
        "xml": str(c),
    }


def iq_error(e):
    return {
        "type": "error",
        "condition": e.iq["error"]["condition"],
        "text": e.iq["error"]["text"] or None,
    }


class Interop(slixmpp.ClientXMPP):
    def __init__(self, args, report, done):
        super().__init__(args.jid, os.environ["SLIXMPP_INTEROP_PASSWORD"], sasl_mech=args.mech)
        self.args = args
        self.report = report
        self.done = done
        self.ca_certs = args.ca
        # With a fixed address slixmpp tries direct TLS first, then STARTTLS: pick one.
        self.enable_direct_tls = args.direct_tls
        self.enable_starttls = not args.direct_tls
        self.enable_plaintext = False
        if args.tls_max == "1.2":
            self.ssl_context.maximum_version = ssl.TLSVersion.TLSv1_2
        self.register_plugin("xep_0199")
        self.register_plugin("xep_0494")
        # In-stream, so it runs before slixmpp acts on the features (all matching handlers run).
        self.register_handler(
            Callback(
                "interop: record features",
                MatchXPath("{http://etherx.jabber.org/streams}features"),
                self.on_features,
                instream=True,
            )
        )
        self.add_event_handler("failed_auth", self.on_failed_auth)
        self.add_event_handler("auth_success", self.on_auth_success)
        self.add_event_handler("session_start", self.on_session_start)
        self.add_event_handler("disconnected", self.on_disconnected)

    def mechs(self):
        return self.plugin["feature_mechanisms"]

    def note_tls(self):
        sock = self.socket
        if sock is not None and "tls_version" not in self.report:
            self.report["tls_version"] = sock.version()

    def gs2_header(self):
        """The GS2 header slixmpp's SCRAM sent (`n,,`, `y,,`, `p=tls-unique,,`...)."""
        h = getattr(self.mechs().mech, "gs2_header", None)
        return h.decode() if h is not None else None

    def on_features(self, features):
        self.report["features"].append([child.tag for child in features.xml])

    def on_failed_auth(self, stanza):
        self.note_tls()
        self.report["offered"] = sorted(self.mechs().mech_list)
        self.report["failures"].append(
            {
                "mechanism": self.mechs().mech.name,
                "gs2_header": self.gs2_header(),
                "condition": stanza["condition"],
                "text": stanza["text"] or None,
            }
        )

    def on_auth_success(self, _stanza):
        # Fired only after slixmpp verified the server's SCRAM signature (mutual auth).
        self.note_tls()
        self.report["offered"] = sorted(self.mechs().mech_list)
        self.report["mechanism"] = self.mechs().mech.name
        self.report["gs2_header"] = self.gs2_header()

    async def on_session_start(self, _event):
        try:
            self.report["bound_jid"] = self.boundjid.full
            t0 = time.monotonic()
            await self.plugin["xep_0199"].ping(jid=self.boundjid.domain, timeout=TIMEOUT_S)
            self.report["ping_rtt_ms"] = round((time.monotonic() - t0) * 1000, 2)
            if self.args.cam:
                await self.cam()
        except Exception as e:  # reported, not swallowed: the Rust side asserts on "error"
            logging.exception("after session start")
            self.report["error"] = f"{type(e).__name__}: {e}"
        self.disconnect()

    async def list_clients(self):
        clients = await self.plugin["xep_0494"].get_clients(timeout=TIMEOUT_S)
        return [client_dict(c) for c in clients]

    async def cam(self):
        self.report["clients"] = await self.list_clients()
        software = self.args.revoke_software
        if not software:
            return
        target = [c for c in self.report["clients"] if c["software"] == software]
        if len(target) != 1:
            self.report["error"] = (
                f"expected one client with software {software!r}, found {len(target)}"
            )
            return
        cid = target[0]["id"]
        if self.args.revoke_as_get:
            # slixmpp 1.17's own XEP_0494.revoke(): the <revoke/> in an iq of type 'get'.
            try:
                await self.plugin["xep_0494"].revoke(cid, timeout=TIMEOUT_S)
                self.report["revoke_get"] = {"id": cid, "type": "result"}
            except IqError as e:
                self.report["revoke_get"] = {"id": cid, **iq_error(e)}
            self.report["clients_after_get"] = await self.list_clients()
        # XEP-0494 says type 'set': the plugin's stanza classes in an iq 'set'.
        iq = self.make_iq_set()
        iq["revoke"]["id"] = cid
        try:
            await iq.send(timeout=TIMEOUT_S)
            self.report["revoke"] = {"id": cid, "type": "result"}
        except IqError as e:
            self.report["revoke"] = {"id": cid, **iq_error(e)}
        self.report["clients_after"] = await self.list_clients()

    def on_disconnected(self, _reason):
        if not self.report.get("bound_jid"):
            self.report["disconnected_before_session"] = True
        if not self.done.done():
            self.done.set_result(None)


async def main():
    args = parse_args()
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    report = {
        "slixmpp": slixmpp.__version__,
        "python": sys.version.split()[0],
        "ssl_channel_binding_types": list(ssl.CHANNEL_BINDING_TYPES),
        "failures": [],
        "features": [],
        "error": None,
    }
    done = asyncio.get_running_loop().create_future()
    xmpp = Interop(args, report, done)
    xmpp.connect(host="127.0.0.1", port=args.port)
    try:
        await asyncio.wait_for(done, TIMEOUT_S)
    except asyncio.TimeoutError:
        report["error"] = report["error"] or f"timed out after {TIMEOUT_S} s"
    print(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    asyncio.run(main())
