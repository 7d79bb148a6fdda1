//! What asking the account side costs a FAST login (issue 23 item 6), in instructions, which
//! the shared machine's load does not change: `LOGINS` FAST logins of one client (verify and
//! commit, token in `current`, nothing written) on the memory store, with or without a
//! `MemoryAccounts` of 1 001 accounts asked for the account's revocation cutoff. Run it under
//! callgrind with two counts; the difference over the difference in logins is the cost of one
//! login, set-up excluded:
//!
//! ```sh
//! cargo build --release --example account_side_cost
//! for mode in without with; do for n in 2000 4000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/account_side_cost --accounts $mode --logins $n 2>&1 | grep Collected
//! done; done
//! ```
//!
//! (valgrind hides the CPU's SHA extensions, so the HMACs cost more instructions there than on
//! the hardware: compare the difference, not the totals. `cargo bench --bench fast --
//! fast_verify_account_side` gives wall-clock times.)

use std::sync::Arc;

use clap::{Parser, ValueEnum};
use sasl2_fast::fast::config::FastConfig;
use sasl2_fast::fast::login::VerifyRequest;
use sasl2_fast::fast::tokens::{IssueKind, TokenRequest};
use sasl2_fast::fast::{FastTokens, HtMechanism, Pepper};
use sasl2_fast::sasl2::accounts::{AccountStore, MemoryAccounts};
use sasl2_fast::store::ClientKey;
use sasl2_fast::store::memory::MemoryStore;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Accounts {
    /// No account store: the token store decides alone.
    Without,
    /// Every login asks a `MemoryAccounts` for the revocation cutoff.
    With,
}

#[derive(Parser)]
struct Args {
    /// Whether logins ask the account side.
    #[arg(long, value_enum)]
    accounts: Accounts,
    /// How many FAST logins.
    #[arg(long, default_value_t = 2000)]
    logins: usize,
}

fn main() {
    let args = Args::parse();
    let accounts = Arc::new(MemoryAccounts::new());
    for i in 0..1000 {
        // One PBKDF2 round: the keys are never checked, only the lookup is measured.
        accounts.set_password(&format!("user{i}"), "pw", 1);
    }
    accounts.set_password("alice", "pw", 1);
    let mut tokens = FastTokens::new(
        Arc::new(MemoryStore::new()),
        Pepper::from_bytes([3; 32]),
        FastConfig::default(),
    );
    if args.accounts == Accounts::With {
        tokens = tokens.with_accounts(accounts as Arc<dyn AccountStore>);
    }
    let m = HtMechanism::from_name("HT-SHA-256-NONE").expect("a mechanism");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let key = ClientKey::new("alice", "ua").expect("a key");
        let token = tokens
            .issue(&key, &TokenRequest::new(m, IssueKind::Requested))
            .await
            .expect("issued")
            .expect("a token");
        let mac = m.initiator_mac(token.token.expose().as_bytes(), &[]);
        for _ in 0..args.logins {
            let request = VerifyRequest::new("alice", "ua", m, &mac, &[]);
            let verified = tokens.verify(&request).await.expect("a valid token");
            std::hint::black_box(tokens.commit(verified, None).await.expect("committed"));
        }
    });
}
