//! The crate's own test-client scenarios against both example servers: the example host and
//! `tokio_xmpp_host` (tokio-xmpp's XML streams, nothing from `host/`). Every scenario is one
//! function of the server kind; `on_both!` makes a test of it for each server, so a failure
//! names the server (`example_host::...` or `tokio_xmpp_host::...`).
//!
//! Channel-binding bytes always come from the client's own TLS session, and `login_fast`
//! checks the server's proof (`<additional-data>` = HMAC(token, "Responder" || cb)).

mod servers;

use std::future::Future;
use std::time::Duration;

use sasl2_fast::fast::RevokedBy;
use sasl2_fast::xmpp::{Redacted, ns};
use sasl2_fast_host::client::{Client, ClientError, LoginOptions, Outcome, Tls, is_stream_error};
use servers::{Kind, Running};

type TResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const UA: &str = "d4565fa7-4d72-4749-b3d3-740edbf87770";
const EXPR: &str = "HT-SHA-256-EXPR";

async fn bounded(secs: u64, f: impl Future<Output = TResult>) -> TResult {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .map_err(|_| format!("test did not finish within {secs} s"))?
}

fn condition(o: Outcome) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    Ok(o.into_failure()?.condition)
}

/// Password login (PLAIN) that requests a token for `mech`.
async fn token_for(s: &Running, tls: Tls, mech: &str) -> Result<String, servers::BoxError> {
    let mut c = s.alice(tls).await?;
    let opts = LoginOptions::agent(UA).request_token(mech);
    let ok = c
        .login_plain("alice", "alicepass", &opts)
        .await?
        .into_success()?;
    Ok(ok.token.ok_or("no token issued")?.token)
}

/// A FAST login of alice on a fresh STARTTLS connection.
async fn fast(
    s: &Running,
    token: &str,
    mech: &str,
    opts: &LoginOptions,
) -> Result<Outcome, servers::BoxError> {
    let mut c = s.alice(Tls::StartTls).await?;
    Ok(c.login_fast("alice", token, mech, opts).await?)
}

/// Password → token → FAST → rotation (F-16..F-19) → invalidate (F-21).
async fn password_token_fast_rotation_invalidate(kind: Kind) -> TResult {
    bounded(60, async {
        let s = Running::start(kind, Duration::from_secs(60), Duration::from_secs(2)).await?;
        let ua = LoginOptions::agent(UA);
        let mut c = s.alice(Tls::StartTls).await?;
        let ok = c
            .login_scram(
                "alice",
                "alicepass",
                "SCRAM-SHA-256-PLUS",
                &ua.clone().request_token(EXPR),
            )
            .await?
            .into_success()?;
        assert_eq!(ok.jid, "alice@localhost");
        let t1 = ok.token.ok_or("no token")?.token;
        // A fresh token is not rotated.
        let ok = fast(&s, &t1, EXPR, &ua).await?.into_success()?;
        assert!(ok.token.is_none(), "rotated a token younger than min_ttl");
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let ok = fast(&s, &t1, EXPR, &ua).await?.into_success()?;
        let t2 = ok.token.ok_or("no rotation after min_ttl")?.token;
        assert_ne!(t2, t1);
        // The new token, once used, replaces the old one.
        fast(&s, &t2, EXPR, &ua).await?.into_success()?;
        assert_eq!(
            condition(fast(&s, &t1, EXPR, &ua).await?)?,
            "not-authorized"
        );
        // Invalidation logs the client out: no token after it, and the token is dead.
        let ok = fast(&s, &t2, EXPR, &ua.clone().invalidate())
            .await?
            .into_success()?;
        assert!(ok.token.is_none(), "token issued on invalidate");
        let c = condition(fast(&s, &t2, EXPR, &ua).await?)?;
        assert!(c == "not-authorized" || c == "credentials-expired", "{c}");
        s.shutdown().await;
        Ok(())
    })
    .await
}

/// Every EXPR and ENDP mechanism offered, over STARTTLS and direct TLS, with the server's proof
/// checked; a token does not work with another binding.
async fn expr_and_endp_with_server_proofs(kind: Kind) -> TResult {
    bounded(90, async {
        let s = Running::start_default(kind).await?;
        for tls in [Tls::StartTls, Tls::Direct] {
            let c = s.alice(tls).await?;
            let offered = c.fast_mechanisms();
            let bound: Vec<&String> = offered
                .iter()
                .filter(|m| m.ends_with("-EXPR") || m.ends_with("-ENDP"))
                .collect();
            assert!(
                bound.iter().any(|m| m.ends_with("-EXPR")),
                "{tls:?}: {offered:?}"
            );
            assert!(
                bound.iter().any(|m| m.ends_with("-ENDP")),
                "{tls:?}: {offered:?}"
            );
            let features = c.features.as_ref().ok_or("no features")?;
            let cb = features
                .get_child("sasl-channel-binding", ns::SASL_CB)
                .ok_or("no sasl-channel-binding")?;
            let types: Vec<&str> = cb.children().filter_map(|e| e.attr("type")).collect();
            assert_eq!(types, ["tls-exporter", "tls-server-end-point"], "{tls:?}");
            for mech in bound {
                let token = token_for(&s, tls, mech).await?;
                let mut c = s.alice(tls).await?;
                let ok = c
                    .login_fast("alice", &token, mech, &LoginOptions::agent(UA))
                    .await?
                    .into_success()
                    .map_err(|e| format!("{tls:?} {mech}: {e}"))?;
                assert_eq!(ok.jid, "alice@localhost", "{mech}");
                let other = mech
                    .rsplit_once('-')
                    .map(|(h, _)| format!("{h}-NONE"))
                    .unwrap_or_default();
                let o = fast(&s, &token, &other, &LoginOptions::agent(UA)).await?;
                assert_eq!(
                    condition(o)?,
                    "not-authorized",
                    "{mech} token used as {other}"
                );
            }
        }
        s.shutdown().await;
        Ok(())
    })
    .await
}

/// A revoked token (here by a password change's revocation) answers `credentials-expired`
/// (F-28), and the password still works on the same stream (S-23).
async fn revoked_token_is_credentials_expired(kind: Kind) -> TResult {
    bounded(30, async {
        let s = Running::start_default(kind).await?;
        let token = token_for(&s, Tls::StartTls, EXPR).await?;
        fast(&s, &token, EXPR, &LoginOptions::agent(UA))
            .await?
            .into_success()?;
        s.fast()
            .tokens()
            .revoke_account("alice", &RevokedBy::PasswordChange)
            .await?;
        let mut c = s.alice(Tls::StartTls).await?;
        let o = c
            .login_fast("alice", &token, EXPR, &LoginOptions::agent(UA))
            .await?;
        assert_eq!(condition(o)?, "credentials-expired");
        let opts = LoginOptions::agent(UA).request_token(EXPR).bind("retry");
        let ok = c
            .login_scram("alice", "alicepass", "SCRAM-SHA-256-PLUS", &opts)
            .await?
            .into_success()?;
        assert!(ok.jid.starts_with("alice@localhost/"), "{}", ok.jid);
        let fresh = ok.token.ok_or("no token on the password retry")?.token;
        c.ping().await?;
        fast(&s, &fresh, EXPR, &LoginOptions::agent(UA))
            .await?
            .into_success()?;
        s.shutdown().await;
        Ok(())
    })
    .await
}

/// Before TLS only STARTTLS is offered; after, SASL2 with the password mechanisms and FAST
/// inside `<inline>`; after login the session answers a ping, and RFC 6120 binding works when
/// Bind 2 was not used (R-4, B-3).
async fn features_and_session(kind: Kind) -> TResult {
    bounded(30, async {
        let s = Running::start_default(kind).await?;
        let mut c = s.alice(Tls::StartTls).await?;
        let pre = c.pre_tls_features.as_ref().ok_or("no pre-TLS features")?;
        assert!(pre.get_child("starttls", ns::TLS).is_some());
        assert!(pre.get_child("authentication", ns::SASL2).is_none());
        let mechs = c.mechanisms();
        for m in [
            "SCRAM-SHA-256-PLUS",
            "SCRAM-SHA-256",
            "SCRAM-SHA-1-PLUS",
            "SCRAM-SHA-1",
        ] {
            assert!(mechs.iter().any(|x| x == m), "{m} missing from {mechs:?}");
        }
        assert!(!mechs.iter().any(|m| m.starts_with("HT-")), "{mechs:?}");
        c.login_scram(
            "alice",
            "alicepass",
            "SCRAM-SHA-1-PLUS",
            &LoginOptions::agent(UA),
        )
        .await?
        .into_success()?;
        let jid = c.bind(Some("desk")).await?;
        assert!(jid.starts_with("alice@localhost/desk"), "{jid}");
        c.ping().await?;
        let mut c = s.alice(Tls::Direct).await?;
        let ok = c
            .login_plain("alice", "alicepass", &LoginOptions::agent(UA).bind("phone"))
            .await?
            .into_success()?;
        assert!(ok.jid.starts_with("alice@localhost/phone"), "{}", ok.jid);
        c.ping().await?;
        s.shutdown().await;
        Ok(())
    })
    .await
}

/// What an unauthenticated stranger sends gets a stream error, never a hang: a `from` of
/// another domain (S-3: `invalid-from`, not echoed), an element over the pre-authentication
/// size bound (`policy-violation`), a stanza before authentication (`not-authorized`).
async fn hostile_input_gets_stream_errors(kind: Kind) -> TResult {
    bounded(30, async {
        let s = Running::start_default(kind).await?;
        let mut c = Client::establish(s.opts(Tls::Direct, Some("alice@example.org"))?).await?;
        c.open_stream().await?;
        match c.read_stream_start().await {
            Err(ClientError::StreamError { condition, .. }) => assert_eq!(condition, "invalid-from"),
            other => panic!("expected invalid-from, got {:?}", other.map(|_| ())),
        }
        assert_eq!(c.header.as_ref().ok_or("no header")?.attr("to"), None, "echoed");

        let mut c = s.alice(Tls::Direct).await?;
        let big = format!(
            "<authenticate xmlns='urn:xmpp:sasl:2' mechanism='PLAIN'><initial-response>{}</initial-response></authenticate>",
            "A".repeat(40 * 1024)
        );
        c.send_raw(big.as_bytes()).await?;
        let e = c.recv_any().await?;
        assert!(is_stream_error(&e, "policy-violation"), "{:?}", Redacted(&e));

        let mut c = s.alice(Tls::Direct).await?;
        c.send_raw(b"<iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>").await?;
        let e = c.recv_any().await?;
        assert!(is_stream_error(&e, "not-authorized"), "{:?}", Redacted(&e));
        s.shutdown().await;
        Ok(())
    })
    .await
}

macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {
        mod example_host {
            $(#[tokio::test] async fn $scenario() -> super::TResult {
                super::$scenario(super::Kind::Example).await
            })*
        }
        mod tokio_xmpp_host {
            $(#[tokio::test] async fn $scenario() -> super::TResult {
                super::$scenario(super::Kind::TokioXmpp).await
            })*
        }
    };
}

on_both!(
    password_token_fast_rotation_invalidate,
    expr_and_endp_with_server_proofs,
    revoked_token_is_credentials_expired,
    features_and_session,
    hostile_input_gets_stream_errors,
);
