//! Why an authentication failed: the RFC 6120 §6.5 conditions and the `<failure>` carrying one.

use std::fmt;

use minidom::Element;
use xmpp_parsers::ns;
use xmpp_parsers::sasl::DefinedCondition;

/// The RFC 6120 §6.5 SASL failure conditions, carried inside a SASL2 `<failure>` or an
/// RFC 6120 `<failure>`.
///
/// A `Copy` mirror of [`xmpp_parsers::sasl::DefinedCondition`] (which is neither `Copy` nor
/// `Hash`), so metrics and observers can use it as a label; the two convert both ways and
/// every `<failure>` on the wire is built from the xmpp-parsers type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SaslCondition {
    /// The client aborted (`<abort>`), S-30.
    Aborted,
    /// The account is disabled.
    AccountDisabled,
    /// The credential is no longer trusted (expired or revoked FAST token, F-28).
    CredentialsExpired,
    /// The mechanism needs an encrypted stream.
    EncryptionRequired,
    /// Bad base64.
    IncorrectEncoding,
    /// The authorization identity is not allowed.
    InvalidAuthzid,
    /// The mechanism was not offered (S-9).
    InvalidMechanism,
    /// The request is syntactically wrong.
    MalformedRequest,
    /// The mechanism is weaker than policy allows.
    MechanismTooWeak,
    /// Bad credentials.
    NotAuthorized,
    /// A temporary server-side problem (e.g. the token store is unreachable).
    TemporaryAuthFailure,
}

impl SaslCondition {
    /// Every condition, for exhaustive tests and metric label sets.
    pub const ALL: [SaslCondition; 11] = [
        SaslCondition::Aborted,
        SaslCondition::AccountDisabled,
        SaslCondition::CredentialsExpired,
        SaslCondition::EncryptionRequired,
        SaslCondition::IncorrectEncoding,
        SaslCondition::InvalidAuthzid,
        SaslCondition::InvalidMechanism,
        SaslCondition::MalformedRequest,
        SaslCondition::MechanismTooWeak,
        SaslCondition::NotAuthorized,
        SaslCondition::TemporaryAuthFailure,
    ];

    /// The element name of the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslCondition::Aborted => "aborted",
            SaslCondition::AccountDisabled => "account-disabled",
            SaslCondition::CredentialsExpired => "credentials-expired",
            SaslCondition::EncryptionRequired => "encryption-required",
            SaslCondition::IncorrectEncoding => "incorrect-encoding",
            SaslCondition::InvalidAuthzid => "invalid-authzid",
            SaslCondition::InvalidMechanism => "invalid-mechanism",
            SaslCondition::MalformedRequest => "malformed-request",
            SaslCondition::MechanismTooWeak => "mechanism-too-weak",
            SaslCondition::NotAuthorized => "not-authorized",
            SaslCondition::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }

    /// Parses a condition element name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl fmt::Display for SaslCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<SaslCondition> for DefinedCondition {
    fn from(c: SaslCondition) -> Self {
        use DefinedCondition as D;
        match c {
            SaslCondition::Aborted => D::Aborted,
            SaslCondition::AccountDisabled => D::AccountDisabled,
            SaslCondition::CredentialsExpired => D::CredentialsExpired,
            SaslCondition::EncryptionRequired => D::EncryptionRequired,
            SaslCondition::IncorrectEncoding => D::IncorrectEncoding,
            SaslCondition::InvalidAuthzid => D::InvalidAuthzid,
            SaslCondition::InvalidMechanism => D::InvalidMechanism,
            SaslCondition::MalformedRequest => D::MalformedRequest,
            SaslCondition::MechanismTooWeak => D::MechanismTooWeak,
            SaslCondition::NotAuthorized => D::NotAuthorized,
            SaslCondition::TemporaryAuthFailure => D::TemporaryAuthFailure,
        }
    }
}

impl From<&DefinedCondition> for SaslCondition {
    fn from(c: &DefinedCondition) -> Self {
        use DefinedCondition as D;
        match c {
            D::Aborted => SaslCondition::Aborted,
            D::AccountDisabled => SaslCondition::AccountDisabled,
            D::CredentialsExpired => SaslCondition::CredentialsExpired,
            D::EncryptionRequired => SaslCondition::EncryptionRequired,
            D::IncorrectEncoding => SaslCondition::IncorrectEncoding,
            D::InvalidAuthzid => SaslCondition::InvalidAuthzid,
            D::InvalidMechanism => SaslCondition::InvalidMechanism,
            D::MalformedRequest => SaslCondition::MalformedRequest,
            D::MechanismTooWeak => SaslCondition::MechanismTooWeak,
            D::NotAuthorized => SaslCondition::NotAuthorized,
            D::TemporaryAuthFailure => SaslCondition::TemporaryAuthFailure,
        }
    }
}

/// A failed authentication attempt: one condition and an optional human-readable text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Failure {
    /// The RFC 6120 condition.
    pub condition: SaslCondition,
    /// Optional text for humans (never contains a secret).
    pub text: Option<String>,
    /// Set by the negotiator on the failure of a password check: whose credential it was and
    /// whether the throttle held it back, for audit logs and metrics. Not sent.
    pub check: Option<super::CheckReport>,
}

impl Failure {
    /// A failure with a condition and no text.
    pub fn new(condition: SaslCondition) -> Self {
        Failure {
            condition,
            text: None,
            check: None,
        }
    }

    /// A failure with a condition and a text.
    pub fn with_text(condition: SaslCondition, text: impl Into<String>) -> Self {
        Failure {
            condition,
            text: Some(text.into()),
            check: None,
        }
    }

    /// The SASL2 `<failure xmlns='urn:xmpp:sasl:2'>` (S-21): the condition in the RFC 6120
    /// namespace, then the text.
    pub fn to_sasl2(&self) -> Element {
        // Built by hand, not from `xmpp_parsers::sasl2::Failure`: that type writes `<text>`
        // before the condition, and xmpp.js (`XMPPError.fromElement`) takes the first child
        // as the condition, so it reported "text". XEP-0388's examples put the condition
        // first (S-21); `tests/xmpp_parsers_gaps.rs` pins the upstream order.
        let mut failure = Element::builder("failure", ns::SASL2)
            .append(Element::from(DefinedCondition::from(self.condition)));
        if let Some(text) = &self.text {
            failure = failure.append(Element::builder("text", ns::SASL2).append(text.as_str()));
        }
        failure.build()
    }

    /// The RFC 6120 `<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>`.
    pub fn to_rfc6120(&self) -> xmpp_parsers::sasl::Failure {
        let mut texts = std::collections::BTreeMap::new();
        if let Some(t) = &self.text {
            texts.insert(String::from("en"), t.clone());
        }
        xmpp_parsers::sasl::Failure {
            defined_condition: self.condition.into(),
            texts,
        }
    }
}

impl From<SaslCondition> for Failure {
    fn from(c: SaslCondition) -> Self {
        Failure::new(c)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.text {
            Some(t) => write!(f, "{}: {t}", self.condition),
            None => write!(f, "{}", self.condition),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_xmpp_parsers() {
        for c in SaslCondition::ALL {
            assert_eq!(SaslCondition::from_name(c.as_str()), Some(c));
            let d = DefinedCondition::from(c);
            assert_eq!(SaslCondition::from(&d), c);
            // The element xmpp-parsers writes carries the same name.
            let el = Element::from(d);
            assert_eq!(el.name(), c.as_str());
            assert_eq!(el.ns(), ns::SASL);
        }
        assert_eq!(SaslCondition::from_name("nope"), None);
    }

    #[test]
    fn sasl2_failure_carries_one_condition_and_the_text() {
        let el = Failure::with_text(SaslCondition::CredentialsExpired, "token expired").to_sasl2();
        assert!(el.is("failure", ns::SASL2));
        // S-21: exactly one RFC 6120 condition.
        let conditions: Vec<_> = el.children().filter(|c| c.ns() == ns::SASL).collect();
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].name(), "credentials-expired");
        // The condition comes first: clients (xmpp.js) read the first child as the condition.
        assert_eq!(
            el.children().next().map(Element::name),
            Some("credentials-expired")
        );
        assert_eq!(
            el.get_child("text", ns::SASL2).unwrap().text(),
            "token expired"
        );
    }

    #[test]
    fn rfc6120_failure() {
        let el = Element::from(Failure::new(SaslCondition::NotAuthorized).to_rfc6120());
        assert!(el.is("failure", ns::SASL));
        assert!(el.get_child("not-authorized", ns::SASL).is_some());
    }
}
