//! placeholder (being written)
#![allow(missing_docs)]
use super::accounts::{ScramCredentials, ScramHash};
pub fn derive_credentials(_h: ScramHash, _password: &str, _iterations: u32) -> ScramCredentials {
    unimplemented!()
}
