//! SCRAM message parsing (RFC 5802 §7): client-first and client-final, total over arbitrary
//! input.

use super::super::MAX_SASL_PAYLOAD;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CbFlag<'a> {
    /// `n`: the client does not support channel binding.
    No,
    /// `y`: the client supports it but thinks the server does not.
    Yes,
    /// `p=<name>`: the client uses channel binding of that type.
    Type(&'a str),
}

#[derive(Debug)]
pub(super) struct ClientFirst<'a> {
    pub(super) cb: CbFlag<'a>,
    pub(super) authzid: Option<String>,
    pub(super) username: String,
    pub(super) nonce: &'a str,
    pub(super) gs2_header: &'a str,
    pub(super) bare: &'a str,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum ParseError {
    Malformed,
    /// A mandatory extension (`m=`) the server does not support.
    MandatoryExtension,
}

#[derive(Debug)]
pub(super) struct ClientFinal<'a> {
    pub(super) cbind: &'a str,
    pub(super) nonce: &'a str,
    pub(super) proof: &'a str,
    pub(super) without_proof: &'a str,
}

/// `saslname`: 1*(value-safe-char / "=2C" / "=3D"), no NUL.
fn decode_saslname(s: &str) -> Option<String> {
    if s.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('=') {
        out.push_str(&rest[..pos]);
        let esc = rest.get(pos..pos + 3)?;
        match esc {
            "=2C" => out.push(','),
            "=3D" => out.push('='),
            _ => return None,
        }
        rest = &rest[pos + 3..];
    }
    out.push_str(rest);
    if out.contains('\0') {
        return None;
    }
    Some(out)
}

/// `cb-name = 1*(ALPHA / DIGIT / "." / "-")`.
fn valid_cb_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// `printable = %x21-2B / %x2D-7E` (no comma).
fn valid_nonce(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// An optional extension `attr-val = ALPHA "=" value`. `m=` is mandatory and unsupported.
fn check_extension(s: &str) -> Result<(), ParseError> {
    let b = s.as_bytes();
    if b.len() < 3 || !b[0].is_ascii_alphabetic() || b[1] != b'=' {
        return Err(ParseError::Malformed);
    }
    if b[0] == b'm' {
        return Err(ParseError::MandatoryExtension);
    }
    Ok(())
}

pub(super) fn parse_client_first(input: &str) -> Result<ClientFirst<'_>, ParseError> {
    use ParseError::Malformed;
    let (flag, rest) = input.split_once(',').ok_or(Malformed)?;
    let cb = match flag {
        "n" => CbFlag::No,
        "y" => CbFlag::Yes,
        f => {
            let name = f.strip_prefix("p=").ok_or(Malformed)?;
            if !valid_cb_name(name) {
                return Err(Malformed);
            }
            CbFlag::Type(name)
        }
    };
    let (authz, bare) = rest.split_once(',').ok_or(Malformed)?;
    let authzid = if authz.is_empty() {
        None
    } else {
        let a = authz.strip_prefix("a=").ok_or(Malformed)?;
        Some(decode_saslname(a).ok_or(Malformed)?)
    };
    let gs2_header = &input[..input.len() - bare.len()];
    let mut attrs = bare.split(',');
    let first = attrs.next().ok_or(Malformed)?;
    if first.starts_with("m=") {
        return Err(ParseError::MandatoryExtension);
    }
    let username = first
        .strip_prefix("n=")
        .and_then(decode_saslname)
        .ok_or(Malformed)?;
    let nonce = attrs
        .next()
        .and_then(|r| r.strip_prefix("r="))
        .ok_or(Malformed)?;
    if !valid_nonce(nonce) {
        return Err(Malformed);
    }
    for ext in attrs {
        check_extension(ext)?;
    }
    Ok(ClientFirst {
        cb,
        authzid,
        username,
        nonce,
        gs2_header,
        bare,
    })
}

pub(super) fn parse_client_final(input: &str) -> Result<ClientFinal<'_>, ParseError> {
    use ParseError::Malformed;
    let (without_proof, proof_attr) = input.rsplit_once(',').ok_or(Malformed)?;
    let proof = proof_attr.strip_prefix("p=").ok_or(Malformed)?;
    let mut attrs = without_proof.split(',');
    let cbind = attrs
        .next()
        .and_then(|c| c.strip_prefix("c="))
        .ok_or(Malformed)?;
    let nonce = attrs
        .next()
        .and_then(|r| r.strip_prefix("r="))
        .ok_or(Malformed)?;
    if cbind.is_empty() || proof.is_empty() || !valid_nonce(nonce) {
        return Err(Malformed);
    }
    for ext in attrs {
        check_extension(ext)?;
    }
    Ok(ClientFinal {
        cbind,
        nonce,
        proof,
        without_proof,
    })
}

/// Validates size and encoding of a client message.
pub(super) fn message_text(input: &[u8]) -> Option<&str> {
    if input.is_empty() || input.len() > MAX_SASL_PAYLOAD || input.contains(&0) {
        return None;
    }
    std::str::from_utf8(input).ok()
}
