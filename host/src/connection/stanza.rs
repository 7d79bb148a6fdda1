//! Stanzas of an authenticated stream: RFC 6120 resource binding, iq ping, the session
//! no-op, and minimal routing between this host's sessions (RFC 6121 §8 rules for messages and
//! presence to bare and full JIDs).

use jid::Jid;
use minidom::Element;
use sasl2_fast::sasl2::bind2::{make_resource, sanitize_tag};
use sasl2_fast::xmpp::ns;
use xmpp_parsers::bind::BindResponse;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use super::{Conn, Flow};

/// Legacy session establishment (RFC 3921), answered with an empty result for old clients.
const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";

/// Sets (or replaces) an unqualified attribute.
pub(crate) fn set_attr(el: &mut Element, name: &str, value: &str) {
    let name = rxml::NcName::try_from(name).expect("attribute names here are valid NCNames");
    el.set_attr(rxml::Namespace::NONE, name, value);
}

fn is_ping(el: &Element) -> bool {
    el.attr("type") == Some("get") && el.get_child("ping", ns::PING).is_some()
}

fn jid_attr(el: &Element, name: &str) -> Option<Jid> {
    el.attr(name).and_then(|v| Jid::new(v).ok())
}

/// An empty `type='result'` answer to an iq (xmpp-parsers `Iq::Result`).
fn result_reply(req: &Element, to: &Jid) -> Element {
    Element::from(Iq::Result {
        from: jid_attr(req, "to"),
        to: Some(to.clone()),
        id: req.attr("id").unwrap_or("").to_owned(),
        payload: None,
    })
}

/// A stanza error reply (`type='cancel'`) to `req`, from where `req` was addressed.
fn error_reply(req: &Element, to: Option<&Jid>, condition: DefinedCondition) -> Element {
    let error = StanzaError::new(ErrorType::Cancel, condition, "en", "");
    let mut error = Element::from(error);
    // StanzaError::new always writes a <text>; an empty one says nothing.
    error.remove_child("text", ns::XMPP_STANZAS);
    let mut r = Element::builder(req.name(), ns::JABBER_CLIENT).build();
    set_attr(&mut r, "type", "error");
    if let Some(id) = req.attr("id") {
        set_attr(&mut r, "id", id);
    }
    if let Some(from) = req.attr("to") {
        set_attr(&mut r, "from", from);
    }
    if let Some(to) = to {
        set_attr(&mut r, "to", to.as_str());
    }
    r.append_child(error);
    r
}

impl Conn {
    /// RFC 6120 §7 resource binding, for clients without Bind 2: the submitted resource
    /// when it is free, a generated one when none was submitted or it is taken (§7.7.2.2), and
    /// the full JID in the result.
    fn legacy_bind(&mut self, el: &Element) -> Flow {
        let Some(a) = &self.authed else {
            return self.stream_error(
                xmpp_parsers::stream_error::DefinedCondition::NotAuthorized,
                None,
            );
        };
        let requested = el
            .get_child("bind", ns::BIND)
            .and_then(|b| b.get_child("resource", ns::BIND))
            .map(|r| r.text())
            .and_then(|r| sanitize_tag(&r));
        let resource = match requested {
            Some(r) if !self.shared.router.has_resource(&a.account, &r) => {
                match jid::ResourcePart::new(&r) {
                    Ok(r) => r.into_owned(),
                    Err(_) => make_resource(None),
                }
            }
            Some(r) => make_resource(Some(&r)),
            None => make_resource(None),
        };
        let full = a.bare.with_resource(&resource);
        self.bind_resource(full.clone());
        let reply = Iq::Result {
            from: None,
            to: None,
            id: el.attr("id").unwrap_or("").to_owned(),
            payload: Some(Element::from(BindResponse { jid: full })),
        };
        self.send(&Element::from(reply));
        Flow::Continue
    }

    pub(super) fn on_stanza(&mut self, mut el: Element) -> Flow {
        let is_iq = el.name() == "iq";
        let typ = el.attr("type").unwrap_or("").to_owned();
        let is_request = is_iq && matches!(typ.as_str(), "get" | "set");
        if is_iq && typ == "set" && el.get_child("bind", ns::BIND).is_some() {
            if self.bound.is_some() {
                let e = error_reply(&el, None, DefinedCondition::NotAllowed);
                self.send(&e);
                return Flow::Continue;
            }
            return self.legacy_bind(&el);
        }
        let (Some(a), Some(b)) = (&self.authed, &self.bound) else {
            return self.stream_error(
                xmpp_parsers::stream_error::DefinedCondition::NotAuthorized,
                Some("bind a resource first"),
            );
        };
        let account = a.account.clone();
        let full_jid = Jid::from(b.full_jid.clone());
        let my_id = b.id;
        let domain = self.shared.server.domain.clone();
        let to_raw = el.attr("to").map(str::to_owned);
        let reply_to_error = |this: &mut Conn, el: &Element, cond: DefinedCondition| {
            if el.attr("type") != Some("error") && (el.name() != "iq" || is_request) {
                let e = error_reply(el, Some(&full_jid), cond);
                this.send(&e);
            }
        };
        set_attr(&mut el, "from", full_jid.as_str());
        let to = match &to_raw {
            None => None,
            Some(t) => match Jid::new(t) {
                Ok(j) => Some(j),
                Err(_) => {
                    if el.name() != "presence" {
                        reply_to_error(self, &el, DefinedCondition::JidMalformed);
                    }
                    return Flow::Continue;
                }
            },
        };
        let kind = el.name().to_owned();
        match to {
            // To the server itself, or no `to` (the server on the client's behalf).
            None => self.for_server(el, &kind, is_request, &account, my_id, true),
            Some(j) if j.domain().as_str() != domain => {
                if kind != "presence" {
                    reply_to_error(self, &el, DefinedCondition::RemoteServerNotFound);
                }
                Flow::Continue
            }
            Some(j) if j.node().is_none() => {
                self.for_server(el, &kind, is_request, &account, my_id, false)
            }
            Some(j) => {
                let node = j.node().map(|n| n.as_str().to_owned()).unwrap_or_default();
                match j.resource() {
                    Some(res) => {
                        if self
                            .shared
                            .router
                            .send_full(&node, res.as_str(), el.clone())
                        {
                            return Flow::Continue;
                        }
                        match kind.as_str() {
                            "iq" => reply_to_error(self, &el, DefinedCondition::ServiceUnavailable),
                            // RFC 6121 §8.5.3.2.1: treat as addressed to the bare JID.
                            "message" if self.shared.router.send_bare(&node, &el, None) == 0 => {
                                reply_to_error(self, &el, DefinedCondition::ServiceUnavailable)
                            }
                            _ => {}
                        }
                        Flow::Continue
                    }
                    None => {
                        match kind.as_str() {
                            "iq" if node == account && is_ping(&el) => {
                                self.send(&result_reply(&el, &full_jid))
                            }
                            "iq" => reply_to_error(self, &el, DefinedCondition::ServiceUnavailable),
                            "message" => {
                                if self.shared.router.send_bare(&node, &el, None) == 0 {
                                    reply_to_error(self, &el, DefinedCondition::ServiceUnavailable);
                                }
                            }
                            _ => {
                                // Directed presence to a bare JID: all its sessions.
                                if node != account {
                                    self.shared.router.send_bare(&node, &el, None);
                                }
                            }
                        }
                        Flow::Continue
                    }
                }
            }
        }
    }

    /// Stanzas for the server (no `to`, or `to` = the domain).
    fn for_server(
        &mut self,
        el: Element,
        kind: &str,
        is_request: bool,
        account: &str,
        my_id: u64,
        no_to: bool,
    ) -> Flow {
        let full_jid = match &self.bound {
            Some(b) => Jid::from(b.full_jid.clone()),
            None => return Flow::Continue,
        };
        match kind {
            "iq" if is_request => {
                let session =
                    el.attr("type") == Some("set") && el.get_child("session", NS_SESSION).is_some();
                if is_ping(&el) || session {
                    self.send(&result_reply(&el, &full_jid));
                } else {
                    self.send(&error_reply(
                        &el,
                        Some(&full_jid),
                        DefinedCondition::ServiceUnavailable,
                    ));
                }
            }
            "iq" => {} // result/error for the server: nothing is waiting for it.
            "presence" if no_to => {
                // Undirected presence: to the account's other sessions.
                self.shared.router.send_bare(account, &el, Some(my_id));
            }
            "presence" => {}
            _ => {
                if no_to {
                    // RFC 6121 §8.5.1: a message without `to` is for the sender's bare JID.
                    self.shared.router.send_bare(account, &el, Some(my_id));
                } else if el.attr("type") != Some("error") {
                    self.send(&error_reply(
                        &el,
                        Some(&full_jid),
                        DefinedCondition::ServiceUnavailable,
                    ));
                }
            }
        }
        Flow::Continue
    }
}
