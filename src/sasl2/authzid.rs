//! Authorization identities (S-10, S-31), shared by the password mechanisms: a client may
//! only name itself.

use super::accounts::normalize_username;
use super::{Failure, SaslCondition, StreamInfo};

/// Longest accepted authorization identity (JID length limit, RFC 7622 §3.1).
pub(crate) const MAX_AUTHZID_BYTES: usize = 3071;

fn domain_eq(a: &str, b: &str) -> bool {
    fn norm(d: &str) -> Option<String> {
        let d = d.strip_suffix('.').unwrap_or(d);
        if d.is_empty() {
            return None;
        }
        stringprep::nameprep(d).ok().map(|c| c.into_owned())
    }
    match (norm(a), norm(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// True if `jid` names the account `username` on `domain`: `username@domain`, or (when
/// `allow_localpart`) just `username`. A resource is accepted only when `strip_resource`.
fn jid_names_user(
    jid: &str,
    username: &str,
    domain: &str,
    allow_localpart: bool,
    strip_resource: bool,
) -> bool {
    let bare = match jid.split_once('/') {
        Some((bare, _)) if strip_resource => bare,
        Some(_) => return false,
        None => jid,
    };
    match bare.split_once('@') {
        Some((local, dom)) => {
            normalize_username(local).as_deref() == Some(username) && domain_eq(dom, domain)
        }
        None => allow_localpart && normalize_username(bare).as_deref() == Some(username),
    }
}

/// Checks a client-supplied authorization identity.
///
/// An empty authzid means "the authenticated user". A non-empty one must be the user's own
/// bare JID (`username@domain`, domain from [`StreamInfo::domain`]) or the bare username;
/// proxy authorization is not supported. If the stream `from` is present it must name the
/// same user as well (S-10). Anything else fails with `invalid-authzid`.
pub(crate) fn check_authzid(
    authzid: &str,
    username: &str,
    stream: &StreamInfo,
) -> Result<(), Failure> {
    if authzid.is_empty() {
        return Ok(());
    }
    let invalid = || Failure::new(SaslCondition::InvalidAuthzid);
    if authzid.len() > MAX_AUTHZID_BYTES
        || !jid_names_user(authzid, username, &stream.domain, true, false)
    {
        return Err(invalid());
    }
    if let Some(from) = &stream.from
        && !jid_names_user(from.as_str(), username, &stream.domain, false, true)
    {
        return Err(invalid());
    }
    Ok(())
}
