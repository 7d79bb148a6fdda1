//! XEP-0494 Client Access Management on an authenticated stream: an iq in `urn:xmpp:cam:0`
//! addressed to the account itself goes to the crate's handler
//! ([`sasl2_fast::fast::cam::ClientAccess`]), which answers it; revoking a FAST client or a
//! session closes the affected streams through the router.

use jid::Jid;
use minidom::Element;
use sasl2_fast::fast::cam::ClientAccess;

use super::{Conn, Flow};

impl Conn {
    /// Answers `el` if it is a XEP-0494 request for this session's own account; gives it
    /// back otherwise (other addressees, or no bound resource yet: the stanza path decides).
    pub(super) async fn client_access(&mut self, el: Element) -> Result<Flow, Element> {
        if !ClientAccess::handles(&el) {
            return Err(el);
        }
        let (Some(a), Some(b)) = (&self.authed, &self.bound) else {
            return Err(el);
        };
        // The account's own data: no `to`, the server, or the sender's bare JID. Anything
        // else (a contact, another account) is routed like any iq.
        let for_self = match el.attr("to").map(Jid::new) {
            None => true,
            Some(Ok(j)) => {
                (j.node().is_none()
                    && j.resource().is_none()
                    && j.domain().as_str() == self.shared.server.domain)
                    || j.as_str() == a.bare.as_str()
            }
            Some(Err(_)) => false,
        };
        if !for_self {
            return Err(el);
        }
        let account = a.account.clone();
        let requester = b.full_jid.clone();
        let reply = self
            .shared
            .client_access
            .handle(&el, &account, &requester)
            .await;
        self.send(&reply);
        Ok(Flow::Continue)
    }
}
